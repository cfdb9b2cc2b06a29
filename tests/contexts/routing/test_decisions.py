"""The decision log: every exclusion reason, the candidates and the tie-break, through the API,
and the dry run; on both databases."""

from __future__ import annotations

from datetime import timedelta

from allot.contexts.routing import agent_service, service
from allot.contexts.routing.schemas import AgentUpdate, LeaveCreate
from allot.kernel.clock import utcnow
from tests.factories import auth_headers, make_user

from .helpers import make_agent, make_queue, submit


async def manager_headers(database) -> dict[str, str]:
    return await auth_headers(database, await make_user(database, roles=("manager",)))


async def decisions(client, headers, **query) -> list[dict]:
    response = await client.get("/api/v1/routing/decisions", params=query, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_every_exclusion_reason_is_recorded(database, clock, client) -> None:
    await make_queue(database, name="Loans")
    anna = await make_agent(database, name="Anna", capacity=1)
    await make_agent(database, name="Boris", status="offline")
    await make_agent(database, name="Carl", status="away")
    dora = await make_agent(database, name="Dora")
    eve = await make_agent(database, name="Eve")
    fay = await make_agent(database, name="Fay", capacity=1)
    gus = await make_agent(database, name="Gus", daily_quota=1)
    # Hal works on a weekday other than today, so he is off schedule now.
    other_day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[(utcnow().weekday() + 3) % 7]
    await make_agent(
        database,
        name="Hal",
        schedule={"timezone": "UTC", "weekly": {other_day: [["00:00", "23:59"]]}},
    )
    async with database.transaction() as session:
        today = utcnow().date()
        await agent_service.add_leave(
            session, dora.id, LeaveCreate(starts_on=today, ends_on=today + timedelta(days=2))
        )
        await agent_service.update_agent(session, eve.id, AgentUpdate(is_active=False))
    # The three who can take work take one lead each: Anna and Fay are full, Gus at his quota.
    taken = {(await submit(database, reference=f"warm:{n}")).agent_id for n in range(3)}
    assert taken == {anna.id, fay.id, gus.id}
    result = await submit(database, reference="lead:x")
    assert result.state == "waiting"
    headers = await manager_headers(database)
    [decision] = await decisions(client, headers, reference="lead:x")
    reasons = {e["agent"]["name"]: e["reasons"] for e in decision["excluded"]}
    assert reasons == {
        "Anna": ["over_capacity"],
        "Boris": ["offline"],
        "Carl": ["away"],
        "Dora": ["on_leave"],
        "Eve": ["deactivated"],
        "Fay": ["over_capacity"],
        "Gus": ["quota"],
        "Hal": ["off_schedule"],
    }
    assert (decision["outcome"], decision["policy"], decision["candidates"]) == (
        "waiting",
        "wait",
        [],
    )
    assert decision["queue"] == "Loans"
    assert decision["trigger"] == "submitted"


async def test_candidates_and_tie_break_say_why_anna_and_not_boris(database, clock, client):
    await make_queue(database, name="Loans")
    anna = await make_agent(database, name="Anna", capacity=3)
    boris = await make_agent(database, name="Boris", capacity=3)
    first = await submit(database, reference="lead:1")
    clock.advance(5)
    second = await submit(database, reference="lead:2")
    assert {first.agent_id, second.agent_id} == {anna.id, boris.id}
    clock.advance(5)
    third = await submit(database, reference="lead:3")
    headers = await manager_headers(database)
    [decision] = await decisions(client, headers, item_id=str(third.item_id))
    names = [c["agent"]["name"] for c in decision["candidates"]]
    winner = "Anna" if third.agent_id == anna.id else "Boris"
    assert names[0] == winner
    assert len(names) == 2
    # Equal load (1 each): the one assigned less recently (the first lead's agent) wins.
    assert third.agent_id == first.agent_id
    assert decision["tie_break"] == "last_assigned_at"
    assert decision["strategy"] == "least_loaded"
    assert [c["load"] for c in decision["candidates"]] == [1, 1]


async def test_a_decliner_is_listed_as_declined_before(database, clock, client) -> None:
    await make_queue(database, name="Offers", offer_mode="offer")
    anna = await make_agent(database, name="Anna")
    boris = await make_agent(database, name="Boris")
    result = await submit(database, reference="lead:o")
    [offer_id] = result.offer_ids
    decliner_id = await _offer_agent(database, offer_id)
    async with database.transaction() as session:
        await service.decline_offer(session, offer_id, decliner_id)
    headers = await manager_headers(database)
    first, second = await decisions(client, headers, reference="lead:o")
    assert (first["outcome"], second["trigger"], second["outcome"]) == (
        "offered",
        "rerouted",
        "offered",
    )
    declined = {e["agent"]["name"]: e["reasons"] for e in second["excluded"]}
    decliner = first["agents"][0]["name"]
    assert declined == {decliner: ["declined_before"]}
    assert second["agents"][0]["name"] != decliner
    assert {first["agents"][0]["id"], second["agents"][0]["id"]} == {str(anna.id), str(boris.id)}


async def _offer_agent(database, offer_id):
    from allot.contexts.routing.models import Offer

    async with database.reader() as session:
        return (await session.get(Offer, offer_id)).agent_id


async def test_decisions_need_an_item_and_a_permission(database, client) -> None:
    headers = await manager_headers(database)
    response = await client.get("/api/v1/routing/decisions", headers=headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.item_id"
    missing = await client.get(
        "/api/v1/routing/decisions", params={"reference": "lead:none"}, headers=headers
    )
    assert missing.status_code == 404
    operator = await auth_headers(database, await make_user(database, roles=("operator",)))
    denied = await client.get(
        "/api/v1/routing/decisions", params={"reference": "lead:none"}, headers=operator
    )
    assert denied.status_code == 403


async def test_dry_run_shows_filter_queue_and_who_would_get_it(database, clock, client):
    await make_queue(database, name="General", member_expression='"loans" in skills')
    await make_queue(database, name="Senior", member_expression='"senior" in skills')
    await make_agent(database, name="Anna", skills=["loans"])
    await make_agent(database, name="Boris", skills=["loans", "senior"], status="offline")
    headers = await manager_headers(database)
    body = {
        "definition": {
            "filters": [
                {"name": "site", "when": 'source == "site"', "queue": "General"},
                {"name": "big", "when": "amount_minor >= 1000", "queue": "Senior",
                 "steps": [{"after_seconds": 60, "queue": "General", "notify": ["manager"]}]},
            ]
        },
        "item": {"attributes": {"source": "phone", "amount_minor": 5000}},
    }  # fmt: skip
    response = await client.post("/api/v1/routing/dry-run", json=body, headers=headers)
    assert response.status_code == 200, response.text
    run = response.json()
    assert [(f["name"], f["matched"]) for f in run["filters"]] == [("site", False), ("big", True)]
    assert (run["queue"], run["would_get"]) == ("Senior", None)
    assert [e["agent"]["name"] for e in run["excluded"]] == ["Boris"]
    assert run["steps"] == [{"after_seconds": 60, "does": "move to General, notify manager"}]
    body["item"]["attributes"]["source"] = "site"
    run = (await client.post("/api/v1/routing/dry-run", json=body, headers=headers)).json()
    assert (run["matched_filter"], run["would_get"]["name"]) == ("site", "Anna")
    # Nothing was written: no item, no decision.
    assert (await client.get("/api/v1/work-items", headers=headers)).status_code in (404, 405)
    bad = {**body, "definition": {"filters": [{"name": "x", "when": "a ==", "queue": "General"}]}}
    refused = await client.post("/api/v1/routing/dry-run", json=bad, headers=headers)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "body.definition.filters.0.when"
