"""Routing's read-only figures for reports: offers by outcome and agent, items by how often they
were assigned, agents' names and teams; counted from histories made through the real engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from allot.contexts import routing
from allot.contexts.routing import service
from allot.kernel.timers import TimerRunner

from .helpers import complete, make_agent, make_queue, offers, set_status, submit

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


async def _read(database, function, **arguments):
    async with database.reader() as session:
        return await function(session, **arguments)


async def outcomes(database, **arguments):
    found = await _read(
        database,
        routing.offer_outcomes,
        kind="lead",
        created_from=arguments.pop("created_from", START),
        created_to=arguments.pop("created_to", START + DAY),
        **arguments,
    )
    return {o.agent_id: dict(o.by_status) for o in found}


async def items(database, **arguments):
    return await _read(
        database,
        routing.item_outcomes,
        kind="lead",
        created_from=START,
        created_to=START + DAY,
        **arguments,
    )


async def test_offers_are_counted_by_agent_and_outcome(database, clock):
    await make_queue(database, offer_mode="offer", offer_timeout_seconds=60)
    anna = await make_agent(database, name="Анна", capacity=1, teams=["north"])
    boris = await make_agent(database, name="Борис", capacity=1, teams=["north", "south"])
    clock.set(START)
    await submit(database, reference="lead:1", attributes={"source": "site"})
    [first] = await offers(database, status="pending")
    async with database.transaction() as session:
        await service.decline_offer(session, first.id, first.agent_id)
    [second] = await offers(database, status="pending")
    async with database.transaction() as session:
        await service.accept_offer(session, second.id, second.agent_id)
    decliner, taker = first.agent_id, second.agent_id  # "lead:1" is the taker's now

    await submit(database, reference="lead:2", attributes={"source": "partner"})
    [third] = await offers(database, status="pending")
    assert third.agent_id == decliner  # the taker has no room left
    clock.advance(61)
    assert await TimerRunner(database).fire_due() >= 1  # times out; nobody else has room
    await complete(database, "lead:1")  # the taker is free: "lead:2" is offered to them
    [fourth] = await offers(database, status="pending")
    assert fourth.agent_id == taker
    await set_status(database, taker, "away")  # their pending offer is withdrawn

    counted = await outcomes(database)
    assert counted == {
        decliner: {"declined": 1, "timed_out": 1},
        taker: {"accepted": 1, "rescinded": 1},
    }
    everyone = await _read(
        database, routing.offer_outcomes, kind="lead", created_from=START,
        created_to=START + DAY,
    )  # fmt: skip
    assert sum(o.offered for o in everyone) == 4
    assert sum(o.count("accepted") for o in everyone) == 1

    # Filters: the item's attributes, the agents, the period, the kind.
    assert await outcomes(database, attributes={"source": "site"}) == {
        decliner: {"declined": 1},
        taker: {"accepted": 1},
    }
    assert await outcomes(database, agent_ids=[taker]) == {taker: {"accepted": 1, "rescinded": 1}}
    assert await outcomes(database, agent_ids=[]) == {}
    assert await outcomes(database, created_from=START + DAY, created_to=START + 2 * DAY) == {}
    other_kind = await _read(
        database, routing.offer_outcomes, kind="job", created_from=START, created_to=START + DAY
    )
    assert other_kind == []

    counts = await items(database)
    assert (counts.items, counts.never_assigned, counts.assigned_once, counts.reassigned) == (
        2, 1, 1, 0,
    )  # fmt: skip
    assert (await items(database, owner_ids=[decliner])).items == 0

    # Names and teams, for the report's rows and its team filter.
    assert await _read(database, routing.agent_names, agent_ids=[anna.id, boris.id, None]) == {
        anna.id: "Анна",
        boris.id: "Борис",
    }
    assert await _read(database, routing.agents_in_team, team="north") == {anna.id, boris.id}
    assert await _read(database, routing.agents_in_team, team="south") == {boris.id}
    assert await _read(database, routing.agents_in_team, team="east") == set()
    assert await _read(database, routing.team_names) == ["north", "south"]


async def test_an_item_taken_back_after_a_missed_first_response_counts_as_reassigned(
    database, clock
):
    await make_queue(database, first_response_seconds=60)
    await make_agent(database, capacity=2)
    await make_agent(database, capacity=2)
    clock.set(START)
    placed = await submit(database, reference="lead:slow")
    await submit(database, reference="lead:quick")
    async with database.transaction() as session:
        await service.record_first_response(session, "lead:quick")
    clock.advance(61)
    assert await TimerRunner(database).fire_due() >= 1
    counts = await items(database)
    assert (counts.items, counts.assigned_once, counts.reassigned) == (2, 1, 1)
    # The first owner's "reclaimed" mark: kept apart from real offers.
    reclaimed = await outcomes(database)
    assert reclaimed == {placed.agent_id: {"reclaimed": 1}}
    [marks] = await _read(
        database, routing.offer_outcomes, kind="lead", created_from=START, created_to=START + DAY
    )
    assert (marks.offered, marks.count("reclaimed")) == (0, 1)
