"""Clearing an agent's optional fields: the API's PATCH (left out = kept, null = cleared, null
refused where a field cannot be empty) and the edit form (an emptied input clears)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher

from allot.contexts.identity import passwords
from tests.factories import auth_headers, csrf_token, login, make_user

from .helpers import agent, make_agent

HTML = {"Accept": "text/html", "Accept-Language": "en"}


@pytest.fixture(autouse=True)
def cheap_password_hashing() -> Iterator[None]:
    previous = passwords.use_hasher(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    yield
    passwords.use_hasher(previous)


async def an_agent_with_quotas(database):
    return await make_agent(
        database, daily_quota=20, monthly_quota=300, languages=["ru"],
        schedule={"weekly": {"mon": [["09:00", "18:00"]]}},
    )  # fmt: skip


@pytest.fixture
async def manager(database):
    return await auth_headers(database, await make_user(database, roles=("manager",)))


async def test_api_null_clears_a_quota_and_left_out_fields_are_kept(client, database, manager):
    olga = await an_agent_with_quotas(database)
    response = await client.patch(
        f"/api/v1/agents/{olga.id}", json={"daily_quota": None}, headers=manager
    )
    assert response.status_code == 200, response.text
    assert (response.json()["daily_quota"], response.json()["monthly_quota"]) == (None, 300)
    saved = await agent(database, olga.id)
    assert (saved.daily_quota, saved.monthly_quota, saved.capacity) == (None, 300, 2)
    assert saved.schedule == {"weekly": {"mon": [["09:00", "18:00"]]}}
    assert saved.attributes["languages"] == ["ru"]


async def test_api_null_clears_the_schedule_and_a_list(client, database, manager):
    olga = await an_agent_with_quotas(database)
    response = await client.patch(
        f"/api/v1/agents/{olga.id}", json={"schedule": None, "languages": None}, headers=manager
    )
    assert response.status_code == 200, response.text
    saved = await agent(database, olga.id)
    assert saved.schedule == {}
    assert saved.off_shift is False  # no schedule: always on shift
    assert saved.attributes["languages"] == []
    assert saved.attributes["skills"] == ["loans"]  # not sent: kept


@pytest.mark.parametrize("field", ["name", "capacity", "weight", "is_active"])
async def test_api_refuses_null_for_fields_that_cannot_be_empty(client, database, manager, field):
    olga = await an_agent_with_quotas(database)
    response = await client.patch(f"/api/v1/agents/{olga.id}", json={field: None}, headers=manager)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == f"body.{field}"
    saved = await agent(database, olga.id)
    assert (saved.name, saved.capacity, saved.is_active) == (olga.name, 2, True)


async def edit_form(client, database, olga, **inputs):
    user = await make_user(database, roles=("manager",))
    assert (await login(client, user.email)).status_code == 303
    token = await csrf_token(client, f"/routing/agents/{olga.id}")
    return await client.post(
        f"/routing/agents/{olga.id}", data={**inputs, "csrf_token": token}, headers=HTML
    )


async def test_an_emptied_quota_input_clears_the_quota(client, database):
    olga = await an_agent_with_quotas(database)
    response = await edit_form(
        client, database, olga, name=olga.name, capacity="2", weight="1.0", skills="loans",
        languages="ru", regions="", teams="", schedule="", daily_quota="", monthly_quota="250",
        is_active="on",
    )  # fmt: skip
    assert response.status_code == 303
    saved = await agent(database, olga.id)
    assert (saved.daily_quota, saved.monthly_quota) == (None, 250)
    assert saved.schedule == {}


async def test_inputs_the_form_did_not_send_are_kept(client, database):
    olga = await an_agent_with_quotas(database)
    response = await edit_form(client, database, olga, name="Olga K.", is_active="on")
    assert response.status_code == 303
    saved = await agent(database, olga.id)
    assert saved.name == "Olga K."
    assert (saved.daily_quota, saved.monthly_quota) == (20, 300)
    assert saved.attributes["languages"] == ["ru"]
    assert saved.schedule == {"weekly": {"mon": [["09:00", "18:00"]]}}
