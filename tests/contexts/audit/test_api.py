"""The audit API: search by object, actor, action and time; cursor pages; read-only; audit:read."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from allot.contexts import audit
from allot.kernel.context import bound
from tests.conftest import count_queries

from .factories import bearer_headers, user_actor

ENTRIES = "/api/v1/audit/entries"
THING = "test.thing"  # an object type only these tests write, so identity's own entries don't mix


@pytest.fixture
async def analyst(database):
    return await bearer_headers(database, roles=["analyst"], email="analyst@example.ru")


async def seed(database, clock, count, *, object_id="T-1", action="test.thing.updated", actor=None):
    """`count` entries one minute apart; returns their ids, oldest first."""
    ids = []
    with bound(actor=actor or user_actor("editor@example.ru")):
        for n in range(count):
            async with database.transaction() as session:
                entry_id = await audit.record(
                    session, action=action, object_type=THING, object_id=object_id,
                    before={"n": n}, after={"n": n + 1},
                )  # fmt: skip
            ids.append(entry_id)
            clock.advance(60)
    return ids


async def fetch(client, headers, **params):
    response = await client.get(ENTRIES, params={"object_type": THING, **params}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_an_entry_reads_back_with_everything_recorded(client, database, clock, analyst):
    (entry_id,) = await seed(database, clock, 1)
    response = await client.get(f"{ENTRIES}/{entry_id}", headers=analyst)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(entry_id)
    assert body["occurred_at"] == "2026-01-05T09:00:00Z"
    assert body["actor_label"] == "editor@example.ru"
    assert (body["object_type"], body["object_id"], body["action"]) == (
        THING, "T-1", "test.thing.updated",
    )  # fmt: skip
    assert (body["before"], body["after"], body["changed_fields"]) == ({"n": 0}, {"n": 1}, ["n"])


async def test_unknown_and_malformed_ids(client, analyst):
    missing = await client.get(f"{ENTRIES}/{uuid.uuid4()}", headers=analyst)
    assert missing.status_code == 404
    assert missing.json()["type"] == "urn:allot:problem:not-found"
    malformed = await client.get(f"{ENTRIES}/not-an-id", headers=analyst)
    assert malformed.status_code == 422
    assert malformed.json()["errors"][0]["field"] == "path.entry_id"


async def test_filter_by_object(client, database, clock, analyst):
    await seed(database, clock, 2, object_id="T-1")
    wanted = await seed(database, clock, 2, object_id="T-2")
    body = await fetch(client, analyst, object_id="T-2")
    assert [e["id"] for e in body["items"]] == [str(i) for i in reversed(wanted)]


async def test_filter_by_actor_and_action(client, database, clock, analyst):
    olga = user_actor("olga@example.ru")
    await seed(database, clock, 2)
    by_olga = await seed(database, clock, 1, actor=olga)
    closed_by_olga = await seed(database, clock, 1, actor=olga, action="test.thing.closed")

    body = await fetch(client, analyst, actor_id=str(olga.id))
    assert {e["id"] for e in body["items"]} == {str(i) for i in by_olga + closed_by_olga}
    body = await fetch(client, analyst, actor_id=str(olga.id), action="test.thing.closed")
    assert [e["id"] for e in body["items"]] == [str(closed_by_olga[0])]
    body = await fetch(client, analyst, actor_label="olga@example.ru")
    assert len(body["items"]) == 2


async def test_filter_by_time_range_since_inclusive_until_exclusive(
    client, database, clock, analyst
):
    start = clock.now()
    ids = await seed(database, clock, 5)  # at start + 0, 1, 2, 3, 4 minutes
    since = (start + timedelta(minutes=1)).isoformat()
    until = (start + timedelta(minutes=3)).isoformat()
    body = await fetch(client, analyst, since=since, until=until)
    assert [e["id"] for e in body["items"]] == [str(ids[2]), str(ids[1])]
    # The same instant written in Moscow time selects the same entries.
    moscow_since = (start + timedelta(minutes=1, hours=3)).strftime("%Y-%m-%dT%H:%M:%S+03:00")
    body = await fetch(client, analyst, since=moscow_since, until=until)
    assert len(body["items"]) == 2


async def test_pages_cover_everything_once_newest_first(client, database, clock, analyst):
    ids = await seed(database, clock, 7)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = await fetch(client, analyst, **params)
        seen += [e["id"] for e in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [str(i) for i in reversed(ids)]


async def test_a_page_costs_the_same_queries_whatever_its_size(client, database, clock, analyst):
    await seed(database, clock, 12)
    await fetch(client, analyst, limit=1)  # warm up: first-request caches are not the budget
    with count_queries(database) as small:
        assert len((await fetch(client, analyst, limit=2))["items"]) == 2
    with count_queries(database) as large:
        assert len((await fetch(client, analyst, limit=50))["items"]) == 12
    assert small.count == large.count


async def test_a_forged_cursor_is_a_400_problem(client, analyst):
    response = await client.get(ENTRIES, params={"cursor": "bm90LWEtY3Vyc29y"}, headers=analyst)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == "urn:allot:problem:invalid-cursor"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "query.since"),
        ({"since": "2026-01-05T09:00:00"}, "query.since"),  # no offset: which 09:00?
        ({"until": "2026-13-01T00:00:00Z"}, "query.until"),
        ({"since": "0001-01-01T00:00:00+03:00"}, "query.since"),
        ({"since": "2026-01-05T10:00:00Z", "until": "2026-01-05T09:00:00Z"}, "query.until"),
        ({"actor_id": "ivan"}, "query.actor_id"),
        ({"limit": "0"}, "query.limit"),
    ],
)
async def test_bad_filters_are_422_naming_the_field(client, analyst, params, field):
    response = await client.get(ENTRIES, params=params, headers=analyst)
    assert response.status_code == 422
    body = response.json()
    assert body["type"] == "urn:allot:problem:validation-error"
    assert [e["field"] for e in body["errors"]] == [field]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_the_trail_cannot_be_written_through_the_api(
    client, database, clock, analyst, method
):
    (entry_id,) = await seed(database, clock, 1)
    for path in (ENTRIES, f"{ENTRIES}/{entry_id}", "/api/v1/audit"):
        response = await client.request(method, path, headers=analyst, json={"action": "forged"})
        assert response.status_code in (404, 405), (method, path)
    body = await fetch(client, analyst)
    assert [e["action"] for e in body["items"]] == ["test.thing.updated"]


async def test_the_api_schema_lists_only_reads(client):
    paths = (await client.get("/api/v1/openapi.json")).json()["paths"]
    audit_paths = {p: set(ops) for p, ops in paths.items() if p.startswith("/api/v1/audit")}
    assert audit_paths == {ENTRIES: {"get"}, ENTRIES + "/{entry_id}": {"get"}}


async def test_reading_needs_a_signed_in_caller_with_audit_read(client, database):
    anonymous = await client.get(ENTRIES)
    assert anonymous.status_code == 401
    assert anonymous.json()["type"] == "urn:allot:problem:unauthorized"

    operator = await bearer_headers(database, roles=["operator"], email="op@example.ru")
    assert (await client.get(ENTRIES, headers=operator)).status_code == 403
    for role in ("admin", "manager", "analyst"):
        headers = await bearer_headers(database, roles=[role], email=f"{role}@example.ru")
        assert (await client.get(ENTRIES, headers=headers)).status_code == 200, role
