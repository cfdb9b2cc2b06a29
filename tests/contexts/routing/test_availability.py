"""Availability: status changes, presence, schedules, leave, reclaim and the first-response SLA."""

from __future__ import annotations

from datetime import date

from allot.contexts.routing import agent_service, service
from allot.contexts.routing.schemas import AgentUpdate, LeaveCreate
from allot.kernel.timers import TimerRunner

from .helpers import (
    agent,
    assert_invariants,
    items,
    make_agent,
    make_queue,
    offers,
    set_status,
    submit,
)


async def test_going_away_hands_pending_offers_to_others(database, clock):
    await make_queue(database, offer_mode="offer")
    anna = await make_agent(database, capacity=1)
    boris = await make_agent(database, capacity=1, status="away")
    await submit(database)
    [offer] = await offers(database)
    assert offer.agent_id == anna.id
    await set_status(database, boris.id, "available")
    await set_status(database, anna.id, "away")
    [rescinded] = await offers(database, status="rescinded")
    [pending] = await offers(database, status="pending")
    assert (rescinded.agent_id, pending.agent_id) == (anna.id, boris.id)
    await assert_invariants(database)


async def test_offline_agents_lose_their_work_after_the_grace(database, clock):
    await make_queue(database, reclaim_grace_seconds=300)
    anna = await make_agent(database, capacity=2)
    await submit(database)
    await submit(database)
    boris = await make_agent(database, capacity=2, status="away")
    await set_status(database, anna.id, "offline")
    runner = TimerRunner(database)
    clock.advance(299)
    await runner.fire_due()
    assert {i.owner_agent_id for i in await items(database)} == {anna.id}
    await set_status(database, boris.id, "available")
    clock.advance(1)
    await runner.fire_due()
    assert {i.owner_agent_id for i in await items(database)} == {boris.id}
    assert (await agent(database, anna.id)).load == 0
    await assert_invariants(database)


async def test_coming_back_within_the_grace_keeps_the_work(database, clock):
    await make_queue(database, reclaim_grace_seconds=300)
    anna = await make_agent(database, capacity=2)
    await submit(database)
    await make_agent(database, capacity=2)
    await set_status(database, anna.id, "offline")
    clock.advance(100)
    await set_status(database, anna.id, "available")
    clock.advance(250)  # 350 s after going offline: past the grace, had it not been cancelled
    await TimerRunner(database).fire_due()
    assert [i.owner_agent_id for i in await items(database)] == [anna.id]


async def test_no_first_response_before_the_sla_reassigns(database, clock):
    await make_queue(database, first_response_seconds=600)
    first = await make_agent(database, capacity=1)
    placed = await submit(database, reference="lead:slow")
    second = await make_agent(database, capacity=1)
    assert placed.agent_id == first.id
    clock.advance(601)
    await TimerRunner(database).fire_due()
    [item] = await items(database)
    assert item.owner_agent_id == second.id
    assert (await agent(database, first.id)).load == 0
    await assert_invariants(database)


async def test_a_first_response_in_time_keeps_the_owner(database, clock):
    await make_queue(database, first_response_seconds=600)
    anna = await make_agent(database, capacity=1)
    await submit(database, reference="lead:quick")
    await make_agent(database, capacity=1)
    clock.advance(300)
    async with database.transaction() as session:
        assert await service.record_first_response(session, "lead:quick") is True
    clock.advance(600)
    await TimerRunner(database).fire_due()
    [item] = await items(database)
    assert item.owner_agent_id == anna.id


async def test_a_silent_agent_goes_offline_after_the_presence_grace(database, clock):
    await make_queue(database)
    anna = await make_agent(database)
    runner = TimerRunner(database)
    clock.advance(120)
    async with database.transaction() as session:
        await agent_service.heartbeat(session, anna.id)
    clock.advance(179)
    await runner.fire_due()
    assert (await agent(database, anna.id)).status == "available"
    clock.advance(2)
    await runner.fire_due()
    assert (await agent(database, anna.id)).status == "offline"


async def test_off_shift_agents_get_nothing_until_the_shift_starts(database, clock):
    # The ManualClock starts on Monday 2026-01-05 09:00 UTC = 12:00 in Moscow.
    await make_queue(database)
    schedule = {"timezone": "Europe/Moscow", "weekly": {"mon": [["14:00", "18:00"]]}}
    anna = await make_agent(database, schedule=schedule)
    assert (await agent(database, anna.id)).off_shift is True
    assert (await submit(database)).state == "waiting"
    clock.advance(2 * 3600)  # 14:00 Moscow: the shift timer fires and the backlog moves
    await TimerRunner(database).fire_due()
    assert (await agent(database, anna.id)).off_shift is False
    assert [i.owner_agent_id for i in await items(database)] == [anna.id]


async def test_leave_makes_an_agent_unavailable_for_its_days(database, clock):
    await make_queue(database, reclaim_grace_seconds=0)
    anna = await make_agent(database, capacity=3)
    boris = await make_agent(database, capacity=3)
    async with database.transaction() as session:
        await agent_service.add_leave(
            session, anna.id, LeaveCreate(starts_on=date(2026, 1, 5), ends_on=date(2026, 1, 6))
        )
    results = [await submit(database) for _ in range(2)]
    assert {r.agent_id for r in results} == {boris.id}
    clock.advance(2 * 24 * 3600)
    await TimerRunner(database).fire_due()
    assert (await agent(database, anna.id)).on_leave is False


async def test_deactivating_an_agent_reclaims_its_work(database, clock):
    await make_queue(database, reclaim_grace_seconds=0)
    anna = await make_agent(database, capacity=1)
    await submit(database)
    boris = await make_agent(database, capacity=1)
    async with database.transaction() as session:
        await agent_service.update_agent(session, anna.id, AgentUpdate(is_active=False))
    await TimerRunner(database).fire_due()
    [item] = await items(database)
    assert item.owner_agent_id == boris.id
    await assert_invariants(database)


async def test_a_reassigned_item_gets_a_fresh_first_response_window(database, clock):
    from datetime import timedelta

    from allot.kernel.clock import utcnow

    await make_queue(database)
    first = await make_agent(database, capacity=1)
    due = utcnow() + timedelta(seconds=600)
    await submit(database, reference="lead:window", first_response_due_at=due)
    second = await make_agent(database, capacity=1)
    third = await make_agent(database, capacity=1)
    runner = TimerRunner(database)
    clock.advance(601)
    await runner.fire_due()
    [item] = await items(database)
    assert item.owner_agent_id in (second.id, third.id)  # taken from the first agent once
    assert item.first_response_due_at == utcnow() + timedelta(seconds=600)
    await runner.fire_due()  # nothing else is due: the new owner keeps it
    assert (await items(database))[0].owner_agent_id == item.owner_agent_id
    assert first.id != item.owner_agent_id
