"""API bearer tokens: issued once, stored hashed, scoped within the owner's permissions,
revocable, expiring, and `last_used_at` written at most once a minute."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select

from allot.contexts.identity.models import ApiToken
from allot.contexts.identity.tokens import digest
from tests.factories import auth_headers, make_user

from .helpers import audit_entries, events_of

TOKENS = "/api/v1/tokens"


async def token_row(database, token_id):
    async with database.reader() as session:
        statement = select(ApiToken).where(ApiToken.id == uuid.UUID(str(token_id)))
        return (await session.execute(statement)).scalar_one()


def bearer(plaintext):
    return {"Authorization": f"Bearer {plaintext}"}


async def test_issue_shows_the_secret_once_and_stores_its_digest(client, database):
    user = await make_user(database, roles=["operator"])
    headers = await auth_headers(database, user)
    response = await client.post(TOKENS, json={"name": "CRM sync"}, headers=headers)
    assert response.status_code == 201, response.text
    issued = response.json()
    plaintext = issued["token"]
    assert plaintext.startswith("allot_")
    assert len(plaintext) > 40
    row = await token_row(database, issued["id"])
    assert row.token_hash == digest(plaintext)
    assert plaintext not in (row.token_hash, row.prefix)
    listed = (await client.get(TOKENS, headers=headers)).json()["items"]
    assert {t["id"] for t in listed} >= {issued["id"]}
    assert all("token" not in t for t in listed)
    (entry,) = await audit_entries(database, issued["id"])
    assert plaintext not in str(entry.after)
    assert len(await events_of(database, "identity.token.issued")) == 2  # the fixture's and ours
    assert (await client.get("/api/v1/me", headers=bearer(plaintext))).status_code == 200


async def test_scopes_limit_what_a_token_may_do(client, database):
    manager = await make_user(database, roles=["manager"])
    headers = await auth_headers(database, manager)
    narrow = await client.post(
        TOKENS, json={"name": "read tokens only", "scopes": ["tokens:manage_own"]}, headers=headers
    )
    assert narrow.status_code == 201
    scoped = bearer(narrow.json()["token"])
    assert (await client.get("/api/v1/users", headers=headers)).status_code == 200
    assert (await client.get("/api/v1/users", headers=scoped)).status_code == 403
    assert (await client.get(TOKENS, headers=scoped)).status_code == 200
    me = (await client.get("/api/v1/me", headers=scoped)).json()
    assert me["permissions"] == ["tokens:manage_own"]
    assert me["token_scopes"] == ["tokens:manage_own"]
    # A scoped token cannot mint a broader one: unscoped requests inherit its scopes.
    child = await client.post(TOKENS, json={"name": "child"}, headers=scoped)
    assert child.status_code == 201
    assert child.json()["scopes"] == ["tokens:manage_own"]
    wider = await client.post(TOKENS, json={"name": "x", "scopes": ["users:read"]}, headers=scoped)
    assert wider.status_code == 422
    assert wider.json()["errors"][0]["field"] == "body.scopes"


async def test_scopes_must_be_among_the_users_permissions(client, database):
    operator = await make_user(database, roles=["operator"])
    headers = await auth_headers(database, operator)
    response = await client.post(
        TOKENS, json={"name": "x", "scopes": ["users:manage"]}, headers=headers
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.scopes"


async def test_revoked_tokens_stop_working(client, database):
    user = await make_user(database, roles=["operator"])
    headers = await auth_headers(database, user)
    issued = (await client.post(TOKENS, json={"name": "temp"}, headers=headers)).json()
    assert (await client.delete(f"{TOKENS}/{issued['id']}", headers=headers)).status_code == 204
    assert (await client.get("/api/v1/me", headers=bearer(issued["token"]))).status_code == 401
    assert (await token_row(database, issued["id"])).revoked_at is not None
    assert len(await events_of(database, "identity.token.revoked")) == 1
    assert (await client.delete(f"{TOKENS}/{issued['id']}", headers=headers)).status_code == 204


async def test_others_tokens_are_invisible_except_to_user_admins(client, database):
    owner = await make_user(database, roles=["operator"])
    stranger = await make_user(database, roles=["operator"])
    admin = await make_user(database, roles=["admin"])
    owner_headers = await auth_headers(database, owner)
    issued = (await client.post(TOKENS, json={"name": "mine"}, headers=owner_headers)).json()
    stranger_headers = await auth_headers(database, stranger)
    response = await client.delete(f"{TOKENS}/{issued['id']}", headers=stranger_headers)
    assert response.status_code == 404
    assert issued["id"] not in [
        t["id"] for t in (await client.get(TOKENS, headers=stranger_headers)).json()["items"]
    ]
    admin_headers = await auth_headers(database, admin)
    assert (
        await client.delete(f"{TOKENS}/{issued['id']}", headers=admin_headers)
    ).status_code == 204


async def test_expired_tokens_are_rejected(client, database, clock):
    user = await make_user(database, roles=["operator"])
    headers = await auth_headers(database, user)
    expires = (clock.now() + timedelta(hours=1)).isoformat()
    issued = (
        await client.post(TOKENS, json={"name": "short", "expires_at": expires}, headers=headers)
    ).json()
    assert (await client.get("/api/v1/me", headers=bearer(issued["token"]))).status_code == 200
    clock.advance(3600)
    assert (await client.get("/api/v1/me", headers=bearer(issued["token"]))).status_code == 401
    past = await client.post(TOKENS, json={"name": "late", "expires_at": expires}, headers=headers)
    assert past.status_code == 422
    assert past.json()["errors"][0]["field"] == "body.expires_at"


async def test_last_used_at_is_written_at_most_once_a_minute(client, database, clock):
    user = await make_user(database, roles=["operator"])
    headers = await auth_headers(database, user)
    issued = (await client.post(TOKENS, json={"name": "busy"}, headers=headers)).json()
    assert (await token_row(database, issued["id"])).last_used_at is None
    first_use = clock.now()
    await client.get("/api/v1/me", headers=bearer(issued["token"]))
    assert (await token_row(database, issued["id"])).last_used_at == first_use
    clock.advance(30)
    await client.get("/api/v1/me", headers=bearer(issued["token"]))
    assert (await token_row(database, issued["id"])).last_used_at == first_use
    clock.advance(31)
    await client.get("/api/v1/me", headers=bearer(issued["token"]))
    assert (await token_row(database, issued["id"])).last_used_at == clock.now()


async def test_bearer_calls_need_no_csrf_token(client, database):
    admin = await make_user(database, roles=["admin"])
    response = await client.post(
        "/api/v1/users",
        json={"email": "n@example.com", "roles": []},
        headers=await auth_headers(database, admin),
    )
    assert response.status_code == 201


async def test_concurrent_requests_of_one_token_read_and_touch_it_once(client, database):
    import asyncio

    from allot.contexts.identity import principal_cache
    from tests.conftest import count_queries

    user = await make_user(database, roles=["operator"])
    headers = await auth_headers(database, user)
    principal_cache.tokens.forget()  # the cached entry ran out: 20 requests arrive at once
    with count_queries(database) as queries:
        responses = await asyncio.gather(
            *(client.get("/api/v1/me", headers=headers) for _ in range(20))
        )
    assert [r.status_code for r in responses] == [200] * 20
    lookups = [s for s in queries.statements if "FROM identity_tokens" in s]
    touches = [s for s in queries.statements if s.lstrip().startswith("UPDATE identity_tokens")]
    assert len(lookups) == 1
    assert len(touches) <= 1
