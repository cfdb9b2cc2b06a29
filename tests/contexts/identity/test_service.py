"""Identity's public interface and use cases, without HTTP: validation naming the field, e-mail
normalisation, duplicates, teams, and what deactivation and deletion take with them."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from allot.contexts import identity
from allot.contexts.identity import UserInfo, service
from allot.contexts.identity.models import ApiToken, BrowserSession
from allot.kernel.errors import Conflict, NotFound, ValidationFailed
from tests.factories import make_user

from .helpers import audit_entries, events_of


async def test_create_user_returns_user_info_and_normalises_the_email(database):
    async with database.transaction() as session:
        info = await identity.create_user(
            session,
            email=" Ivan.Petrov@Example.RU ",
            password="long enough pass",
            roles=["operator", "manager"],
            display_name="  Ivan   Petrov ",
            locale="en",
        )
    assert isinstance(info, UserInfo)
    assert info.email == "ivan.petrov@example.ru"
    assert info.display_name == "Ivan Petrov"
    assert info.roles == frozenset({"operator", "manager"})
    assert info.is_active
    assert info.locale == "en"
    assert info.team_ids == frozenset()
    async with database.reader() as session:
        assert await identity.get_user(session, info.id) == info
        assert await identity.get_user_by_email(session, "IVAN.PETROV@example.ru") == info
        assert await identity.get_user_by_email(session, "nobody@example.ru") is None


async def test_display_name_defaults_to_the_mailbox(database):
    info = await make_user(database, email="olga@example.com")
    assert info.display_name == "olga"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"email": "no-at-sign"}, "body.email"),
        ({"email": "a@b"}, "body.email"),
        ({"password": "123456789"}, "body.password"),
        ({"roles": ["operator", "wizard"]}, "body.roles"),
        ({"locale": "fr"}, "body.locale"),
        ({"display_name": "x" * 201}, "body.display_name"),
    ],
)
async def test_invalid_input_names_the_field(database, kwargs, field):
    arguments = {
        "email": "ok@example.com",
        "password": "long enough pass",
        "roles": ["operator"],
        **kwargs,
    }
    async with database.transaction() as session:
        with pytest.raises(ValidationFailed) as failure:
            await identity.create_user(session, **arguments)
    assert [e.field for e in failure.value.errors] == [field]


async def test_duplicate_email_is_a_conflict(database):
    await make_user(database, email="dup@example.com")
    async with database.transaction() as session:
        with pytest.raises(Conflict):
            await identity.create_user(session, email="Dup@Example.com", password=None, roles=[])


async def test_users_without_password_exist_but_cannot_sign_in(database):
    info = await make_user(database, password=None)
    async with database.reader() as session:
        user = await service.get_user(session, info.id)
    assert user.password_hash is None


async def test_teams_membership_is_reflected_in_user_info(database):
    async with database.transaction() as session:
        north = await service.create_team(session, "North")
        south = await service.create_team(session, "South")
    info = await make_user(database)
    async with database.transaction() as session:
        await service.update_user(session, info.id, team_ids=[north.id, south.id])
    async with database.transaction() as session:
        await service.update_user(session, info.id, team_ids=[south.id])
    async with database.reader() as session:
        assert (await identity.get_user(session, info.id)).team_ids == frozenset({south.id})
    async with database.transaction() as session:
        with pytest.raises(Conflict):
            await service.create_team(session, "  north ")


async def test_an_unchanged_update_writes_nothing(database):
    info = await make_user(database, display_name="Same")
    async with database.transaction() as session:
        await service.update_user(session, info.id, display_name="Same", roles=["operator"])
    assert [e.action for e in await audit_entries(database, info.id)] == ["identity.user.created"]
    assert await events_of(database, "identity.user.updated") == []


async def test_password_reset_by_an_admin_ends_sessions_and_is_audited_without_the_hash(
    client, database
):
    from tests.factories import login

    admin = await make_user(database, roles=["admin"])
    info = await make_user(database, email="ann@example.com")
    await login(client, "ann@example.com")
    async with database.transaction() as session:
        await service.update_user(session, info.id, actor_id=admin.id, password="a new long pass")
    assert (await client.get("/api/v1/me")).status_code == 401
    entry = (await audit_entries(database, info.id))[-1]
    assert entry.after["credentials_changed"] is True
    assert "$argon2" not in str(entry.before) + str(entry.after)


async def count(database, model, user_id):
    async with database.reader() as session:
        statement = select(func.count()).select_from(model).where(model.user_id == user_id)
        return (await session.execute(statement)).scalar_one()


async def test_deactivation_ends_sessions_and_revokes_tokens(client, database):
    from tests.factories import auth_headers, login

    info = await make_user(database, email="ann@example.com")
    await login(client, "ann@example.com")
    await auth_headers(database, info)
    assert await count(database, BrowserSession, info.id) == 1
    async with database.transaction() as session:
        await service.deactivate_user(session, info.id)
    assert await count(database, BrowserSession, info.id) == 0
    async with database.reader() as session:
        tokens = (
            await session.execute(select(ApiToken).where(ApiToken.user_id == info.id))
        ).scalars()
        assert all(token.revoked_at is not None for token in tokens)
    actions = [e.action for e in await audit_entries(database, info.id)]
    assert actions[-1] == "identity.user.deactivated"
    # Deactivating twice changes nothing more.
    async with database.transaction() as session:
        await service.deactivate_user(session, info.id)
    assert len(await events_of(database, "identity.user.deactivated")) == 1


async def test_delete_removes_sessions_tokens_and_the_row(client, database):
    from tests.factories import auth_headers, login

    info = await make_user(database, email="ann@example.com")
    await login(client, "ann@example.com")
    await auth_headers(database, info)
    async with database.transaction() as session:
        await service.delete_user(session, info.id)
    assert await count(database, BrowserSession, info.id) == 0
    assert await count(database, ApiToken, info.id) == 0
    async with database.reader() as session:
        assert await identity.get_user(session, info.id) is None
        with pytest.raises(NotFound):
            await service.get_user(session, info.id)


async def test_issue_token_through_the_public_interface(database, client):
    info = await make_user(database, roles=["analyst"])
    async with database.transaction() as session:
        token_id, plaintext = await identity.issue_token(session, user_id=info.id, name="cli")
    response = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {plaintext}"})
    assert response.status_code == 200
    assert response.json()["id"] == str(info.id)
    async with database.transaction() as session:
        with pytest.raises(NotFound):
            await identity.issue_token(session, user_id=token_id, name="no such user")
