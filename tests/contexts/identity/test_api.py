"""The users, /me and teams JSON API: permissions, object-level visibility, validation problems,
idempotent creation, and a query budget that does not grow with the page size."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import count_queries
from tests.factories import auth_headers, make_user

from .helpers import audit_entries, events_of

USERS = "/api/v1/users"


@pytest.fixture
async def admin(database):
    user = await make_user(database, email="admin@example.com", roles=["admin"])
    return await auth_headers(database, user)


async def test_unauthenticated_call_is_a_401_problem(client):
    response = await client.get(USERS)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == "urn:allot:problem:unauthorized"
    # Unsafe methods too: an anonymous API call has no cookie to forge, so no CSRF 403 first.
    response = await client.post(USERS, json={"email": "x@example.com"})
    assert response.status_code == 401


async def test_a_bad_bearer_token_is_a_401(client, database):
    assert (
        await client.get("/api/v1/me", headers={"Authorization": "Bearer nope"})
    ).status_code == 401
    assert (
        await client.get("/api/v1/me", headers={"Authorization": "Basic YTpi"})
    ).status_code == 401


async def test_admin_creates_a_user_and_it_is_audited_without_secrets(client, database, admin):
    response = await client.post(
        USERS,
        json={
            "email": "  Olga@Example.COM ",
            "password": "long enough pass",
            "roles": ["manager"],
            "display_name": "Olga Ivanova",
            "locale": "en",
        },
        headers=admin,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["email"] == "olga@example.com"
    assert body["roles"] == ["manager"]
    assert body["locale"] == "en"
    assert "password" not in body
    assert "password_hash" not in body

    (entry,) = await audit_entries(database, body["id"])
    assert entry.action == "identity.user.created"
    assert entry.after["email"] == "olga@example.com"
    assert entry.after["roles"] == ["manager"]
    assert "password_hash" not in entry.after
    assert "password" not in entry.after
    assert "long enough pass" not in str(entry.after)
    (event,) = [
        e for e in await events_of(database, "identity.user.created") if e.aggregateid == body["id"]
    ]
    assert event.payload["user_id"] == body["id"]
    assert "email" not in event.payload


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"email": "not-an-email", "password": "long enough pass", "roles": []}, "body.email"),
        ({"email": "a@example.com", "password": "short", "roles": []}, "body.password"),
        ({"email": "a@example.com", "roles": ["emperor"]}, "body.roles"),
        ({"email": "a@example.com", "roles": [], "nickname": "x"}, "body.nickname"),
        ({"email": "a@example.com", "roles": [], "locale": "de"}, "body.locale"),
    ],
)
async def test_invalid_users_are_422_naming_the_field(client, admin, payload, field):
    response = await client.post(USERS, json=payload, headers=admin)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"] == "urn:allot:problem:validation-error"
    assert field in [error["field"] for error in problem["errors"]]


async def test_duplicate_email_is_409(client, admin):
    first = await client.post(USERS, json={"email": "dup@example.com", "roles": []}, headers=admin)
    assert first.status_code == 201
    again = await client.post(USERS, json={"email": "DUP@example.com", "roles": []}, headers=admin)
    assert again.status_code == 409
    assert again.json()["errors"][0]["field"] == "body.email"


async def test_create_honours_idempotency_key(client, database, admin):
    headers = {**admin, "Idempotency-Key": "create-olga"}
    payload = {"email": "olga@example.com", "roles": ["operator"]}
    first = await client.post(USERS, json=payload, headers=headers)
    second = await client.post(USERS, json=payload, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert second.json()["id"] == first.json()["id"]
    assert len(await events_of(database, "identity.user.created")) == 2  # admin + olga, once


async def test_operators_cannot_manage_users(client, database):
    operator = await make_user(database, roles=["operator"])
    headers = await auth_headers(database, operator)
    response = await client.post(
        USERS, json={"email": "x@example.com", "roles": []}, headers=headers
    )
    assert response.status_code == 403
    assert (await client.get(USERS, headers=headers)).status_code == 403


async def test_object_level_an_operator_reads_only_themselves(client, database):
    """Another user's id is a 404, exactly like an id that does not exist (no account probing)."""
    me = await make_user(database, roles=["operator"])
    other = await make_user(database, roles=["operator"])
    headers = await auth_headers(database, me)
    assert (await client.get(f"{USERS}/{me.id}", headers=headers)).status_code == 200
    hidden = await client.get(f"{USERS}/{other.id}", headers=headers)
    missing = await client.get(f"{USERS}/{uuid.uuid4()}", headers=headers)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["type"] == missing.json()["type"] == "urn:allot:problem:not-found"


async def test_managers_read_anyone(client, database):
    manager = await make_user(database, roles=["manager"])
    other = await make_user(database, roles=["operator"])
    headers = await auth_headers(database, manager)
    response = await client.get(f"{USERS}/{other.id}", headers=headers)
    assert response.status_code == 200
    assert response.json()["email"] == other.email


async def test_patch_changes_roles_and_teams(client, database, admin):
    user = await make_user(database, roles=["operator"])
    team = await client.post("/api/v1/teams", json={"name": "North"}, headers=admin)
    assert team.status_code == 201
    response = await client.patch(
        f"{USERS}/{user.id}",
        json={"roles": ["manager", "analyst"], "team_ids": [team.json()["id"]]},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    assert response.json()["roles"] == ["analyst", "manager"]
    assert response.json()["team_ids"] == [team.json()["id"]]
    updated = [e for e in await audit_entries(database, user.id) if e.action.endswith("updated")]
    assert updated[-1].before["roles"] == ["operator"]
    assert updated[-1].after["roles"] == ["analyst", "manager"]
    # The new roles apply at once: the user's next call sees manager permissions.
    headers = await auth_headers(database, user)
    assert (await client.get(USERS, headers=headers)).status_code == 200


async def test_unknown_team_is_422(client, database, admin):
    user = await make_user(database)
    response = await client.patch(
        f"{USERS}/{user.id}", json={"team_ids": [str(uuid.uuid4())]}, headers=admin
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.team_ids"


async def test_admin_cannot_lock_themselves_out(client, database):
    admin = await make_user(database, roles=["admin"])
    headers = await auth_headers(database, admin)
    demote = await client.patch(f"{USERS}/{admin.id}", json={"roles": []}, headers=headers)
    assert demote.status_code == 409
    assert (await client.post(f"{USERS}/{admin.id}/deactivate", headers=headers)).status_code == 409
    assert (await client.delete(f"{USERS}/{admin.id}", headers=headers)).status_code == 409


async def test_deactivation_revokes_tokens_and_reactivation_restores_sign_in(
    client, database, admin
):
    user = await make_user(database, roles=["operator"])
    headers = await auth_headers(database, user)
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
    response = await client.post(f"{USERS}/{user.id}/deactivate", headers=admin)
    assert response.status_code == 200
    assert response.json()["is_active"] is False
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 401
    assert len(await events_of(database, "identity.user.deactivated")) == 1
    reactivated = await client.post(f"{USERS}/{user.id}/reactivate", headers=admin)
    assert reactivated.json()["is_active"] is True
    # Revoked tokens stay revoked: reactivation is not a way to resurrect credentials.
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 401


async def test_delete_erases_the_user_and_pseudonymises_the_audit_trail(client, database, admin):
    user = await make_user(database, email="gone@example.com", display_name="Gone Person")
    response = await client.delete(f"{USERS}/{user.id}", headers=admin)
    assert response.status_code == 204
    assert (await client.get(f"{USERS}/{user.id}", headers=admin)).status_code == 404
    entries = await audit_entries(database, user.id)
    assert [e.action for e in entries] == ["identity.user.created", "identity.user.deleted"]
    for entry in entries:
        text = f"{entry.before} {entry.after}"
        assert "gone@example.com" not in text
        assert "Gone Person" not in text
    assert len(await events_of(database, "identity.user.deleted")) == 1
    # The address is free again.
    again = await client.post(USERS, json={"email": "gone@example.com", "roles": []}, headers=admin)
    assert again.status_code == 201


async def test_me_shows_permissions_and_patches_own_locale(client, database):
    user = await make_user(database, roles=["operator"], locale="ru")
    headers = await auth_headers(database, user)
    me = await client.get("/api/v1/me", headers=headers)
    assert me.status_code == 200
    assert "tokens:manage_own" in me.json()["permissions"]
    assert "users:manage" not in me.json()["permissions"]
    assert me.json()["via"] == "token"
    patched = await client.patch("/api/v1/me", json={"locale": "en"}, headers=headers)
    assert patched.status_code == 200
    assert patched.json()["locale"] == "en"
    forbidden = await client.patch("/api/v1/me", json={"roles": ["admin"]}, headers=headers)
    assert forbidden.status_code == 422
    assert forbidden.json()["errors"][0]["field"] == "body.roles"


async def test_list_is_paginated_newest_first(client, database, admin):
    for n in range(3):
        await make_user(database, email=f"page{n}@example.com", password=None)
    first = await client.get(USERS, params={"limit": 2}, headers=admin)
    assert [u["email"] for u in first.json()["items"]] == ["page2@example.com", "page1@example.com"]
    second = await client.get(
        USERS, params={"limit": 2, "cursor": first.json()["next_cursor"]}, headers=admin
    )
    assert [u["email"] for u in second.json()["items"]] == [
        "page0@example.com",
        "admin@example.com",
    ]
    assert second.json()["next_cursor"] is None


async def test_list_query_count_does_not_grow_with_page_size(client, database, admin):
    teams = []
    for name in ("A", "B"):
        teams.append(
            (await client.post("/api/v1/teams", json={"name": name}, headers=admin)).json()
        )
    async with database.transaction() as session:
        for n in range(24):
            await make_user(
                session, email=f"bulk{n}@example.com", password=None, roles=["operator", "analyst"]
            )
    for user in (await client.get(USERS, params={"limit": 30}, headers=admin)).json()["items"][:5]:
        await client.patch(
            f"{USERS}/{user['id']}", json={"team_ids": [t["id"] for t in teams]}, headers=admin
        )

    async def statements(limit: int) -> int:
        with count_queries(database) as counter:
            response = await client.get(USERS, params={"limit": limit}, headers=admin)
        assert response.status_code == 200
        assert len(response.json()["items"]) == limit
        return counter.count

    await statements(2)  # the token's principal is cached after its first use
    small, large = await statements(2), await statements(20)
    assert small == large
