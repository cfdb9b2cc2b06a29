"""Offers: one agent with a timeout, broadcast with first-accept-wins, declines, auto-away."""

from __future__ import annotations

import asyncio

import pytest

from allot.contexts.routing import service
from allot.kernel.errors import Conflict
from allot.kernel.timers import TimerRunner

from .helpers import agent, assert_invariants, items, make_agent, make_queue, offers, submit


async def _accept(database, offer_id, agent_id):
    async with database.transaction() as session:
        return await service.accept_offer(session, offer_id, agent_id)


async def _decline(database, offer_id, agent_id):
    async with database.transaction() as session:
        await service.decline_offer(session, offer_id, agent_id)


async def test_an_offer_reserves_capacity_and_accepting_assigns(database, clock):
    await make_queue(database, offer_mode="offer")
    anna = await make_agent(database, capacity=1)
    result = await submit(database)
    assert result.state == "offered"
    [offer] = await offers(database)
    assert (offer.agent_id, offer.status) == (anna.id, "pending")
    assert (await agent(database, anna.id)).load == 1  # reserved while the offer is open
    await assert_invariants(database)
    item = await _accept(database, offer.id, anna.id)
    assert (item.state, item.owner_agent_id) == ("assigned", anna.id)
    await assert_invariants(database)


async def test_a_declined_item_goes_on_and_never_returns_to_the_decliner(database, clock):
    await make_queue(database, offer_mode="offer")
    anna = await make_agent(database, capacity=1)
    clock.advance(1)
    boris = await make_agent(database, capacity=1)
    await submit(database)
    [first] = await offers(database)
    await _decline(database, first.id, first.agent_id)
    pending = await offers(database, status="pending")
    assert [o.agent_id for o in pending] == [({anna.id, boris.id} - {first.agent_id}).pop()]
    await _decline(database, pending[0].id, pending[0].agent_id)
    # both declined: the item waits rather than going back to either of them
    [item] = await items(database)
    assert item.state == "waiting"
    assert await offers(database, status="pending") == []
    assert (await agent(database, anna.id)).load == (await agent(database, boris.id)).load == 0
    await assert_invariants(database)


async def test_an_unanswered_offer_times_out_and_moves_on(database, clock):
    await make_queue(database, offer_mode="offer", offer_timeout_seconds=120)
    await make_agent(database, capacity=1)
    await make_agent(database, capacity=1)
    await submit(database)
    [first] = await offers(database)
    runner = TimerRunner(database)
    clock.advance(119)
    assert await runner.fire_due() == 0
    clock.advance(1)
    assert await runner.fire_due() == 1
    timed_out = (await offers(database, status="timed_out"))[0]
    assert timed_out.id == first.id
    [second] = await offers(database, status="pending")
    assert second.agent_id != first.agent_id
    assert (await agent(database, first.agent_id)).missed_offers == 1
    await assert_invariants(database)


async def test_repeated_misses_put_an_agent_away(database, clock):
    await make_queue(
        database, offer_mode="offer", offer_timeout_seconds=60, auto_away_after_misses=2
    )
    sleepy = await make_agent(database, capacity=5)
    runner = TimerRunner(database)
    for _ in range(2):
        await submit(database)
        clock.advance(61)
        await runner.fire_due()
    assert (await agent(database, sleepy.id)).status == "away"
    await assert_invariants(database)


async def test_broadcast_first_accept_wins_and_the_rest_are_rescinded(database, clock):
    await make_queue(database, offer_mode="broadcast", broadcast_size=3)
    agents = [await make_agent(database, capacity=1) for _ in range(3)]
    await submit(database)
    pending = await offers(database, status="pending")
    assert {o.agent_id for o in pending} == {a.id for a in agents}
    winner = pending[1]
    await _accept(database, winner.id, winner.agent_id)
    loser = pending[0]
    with pytest.raises(Conflict):
        await _accept(database, loser.id, loser.agent_id)
    statuses = {o.agent_id: o.status for o in await offers(database)}
    assert statuses[winner.agent_id] == "accepted"
    assert sorted(statuses.values()) == ["accepted", "rescinded", "rescinded"]
    for a in agents:
        expected = 1 if a.id == winner.agent_id else 0
        assert (await agent(database, a.id)).load == expected
    await assert_invariants(database)


async def test_concurrent_accepts_have_exactly_one_winner(database, clock):
    await make_queue(database, offer_mode="broadcast", broadcast_size=4)
    for _ in range(4):
        await make_agent(database, capacity=1)
    await submit(database)
    pending = await offers(database, status="pending")

    async def try_accept(offer):
        try:
            await _accept(database, offer.id, offer.agent_id)
            return True
        except Conflict:
            return False

    outcomes = await asyncio.gather(*(try_accept(o) for o in pending))
    assert sorted(outcomes) == [False, False, False, True]
    [item] = await items(database)
    assert item.state == "assigned"
    await assert_invariants(database)


async def test_an_agent_cannot_answer_someone_elses_offer(database, clock):
    await make_queue(database, offer_mode="offer")
    await make_agent(database, capacity=1)
    intruder = await make_agent(database, capacity=0)
    await submit(database)
    [offer] = await offers(database)
    with pytest.raises(Conflict):
        await _accept(database, offer.id, intruder.id)
    assert (await offers(database))[0].status == "pending"
