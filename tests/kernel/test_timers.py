"""Durable timers: due time, fired exactly once, surviving restarts, retried on failure."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select

from allot.kernel.clock import utcnow
from allot.kernel.db.engine import Database
from allot.kernel.events import OutboxEvent, publish
from allot.kernel.timers import Timer, TimerRunner, cancel, schedule, timer_handler

FIRED: list[str] = []


@timer_handler("test.remind")
async def remind(session, timer):
    FIRED.append(timer.payload["who"])
    # The effect commits in the same transaction as the "fired" mark.
    await publish(session, type="test.reminded", aggregate_type="t", aggregate_id="r", payload={})


@timer_handler("test.fails_twice")
async def fails_twice(session, timer):
    FIRED.append(f"attempt-{timer.attempts}")
    if timer.attempts <= 2:
        raise TimeoutError("provider slow")


async def _schedule(database, seconds, who="anna", key=None, kind="test.remind"):
    async with database.transaction() as session:
        return await schedule(
            session, kind, utcnow() + timedelta(seconds=seconds), {"who": who}, key=key
        )


async def _reminded_count(database):
    async with database.reader() as session:
        stmt = (
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.type == "test.reminded")
        )
        return await session.scalar(stmt)


async def test_a_timer_fires_once_when_due_and_not_before(database, clock):
    FIRED.clear()
    await _schedule(database, 120)
    runner = TimerRunner(database)
    assert await runner.fire_due() == 0
    clock.advance(119)
    assert await runner.fire_due() == 0
    clock.advance(1)
    assert await runner.fire_due() == 1
    assert await runner.fire_due() == 0
    clock.advance(3600)
    assert await runner.fire_due() == 0
    assert FIRED == ["anna"]
    assert await _reminded_count(database) == 1


async def test_a_timer_survives_a_restart(database_url, database, clock):
    FIRED.clear()
    await _schedule(database, 60, who="boris")
    await database.dispose()  # the process "dies"

    restarted = Database(database_url)
    try:
        clock.advance(61)
        assert await TimerRunner(restarted).fire_due() == 1
    finally:
        await restarted.dispose()
    assert FIRED == ["boris"]


async def test_concurrent_runners_fire_each_timer_exactly_once(database, clock):
    FIRED.clear()
    for n in range(30):
        await _schedule(database, 10, who=f"agent-{n}")
    clock.advance(11)
    runners = [TimerRunner(database, batch_size=50) for _ in range(3)]
    fired = await asyncio.gather(*(r.fire_due() for r in runners))
    assert sum(fired) == 30
    assert sorted(FIRED) == sorted(f"agent-{n}" for n in range(30))
    assert await _reminded_count(database) == 30


async def test_a_failing_timer_is_retried_with_backoff(database, clock):
    FIRED.clear()
    timer_id = await _schedule(database, 5, kind="test.fails_twice")
    runner = TimerRunner(database)
    for _ in range(3):
        clock.advance(600)
        await runner.fire_due()
    async with database.reader() as session:
        timer = await session.get(Timer, timer_id)
    assert timer.status == "fired"
    assert FIRED == ["attempt-1", "attempt-2", "attempt-3"]


async def test_a_timer_that_keeps_failing_ends_failed_not_lost(database, clock):
    FIRED.clear()
    timer_id = await _schedule(database, 5, kind="test.fails_twice")
    runner = TimerRunner(database, max_attempts=2)
    for _ in range(4):
        clock.advance(600)
        await runner.fire_due()
    async with database.reader() as session:
        timer = await session.get(Timer, timer_id)
    assert timer.status == "failed"
    assert "provider slow" in timer.last_error


async def test_a_keyed_timer_can_be_cancelled_or_replaced(database, clock):
    FIRED.clear()
    await _schedule(database, 30, who="first", key="offer:1")
    await _schedule(database, 90, who="second", key="offer:1")  # replaces the first
    await _schedule(database, 30, who="other", key="offer:2")
    async with database.transaction() as session:
        assert await cancel(session, "offer:2") is True
        assert await cancel(session, "offer:unknown") is False
    clock.advance(100)
    await TimerRunner(database).fire_due()
    assert FIRED == ["second"]


async def test_an_unknown_timer_kind_is_kept_and_reported(database, clock):
    timer_id = await _schedule(database, 1, kind="test.nobody_handles_this")
    clock.advance(2)
    assert await TimerRunner(database).fire_due() == 0
    async with database.reader() as session:
        timer = await session.get(Timer, timer_id)
    assert timer.status == "pending"
    assert "No handler" in timer.last_error
