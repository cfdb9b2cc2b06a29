"""Presence heartbeats kept in the real Redis: a beat writes no database row, the presence timer
reads the beats when it fires, status changes stay in the database with their events and audit,
and an outage never puts anybody offline wrongly."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from allot.contexts.audit.models import AuditEntry
from allot.contexts.routing import agent_service
from allot.kernel.events.models import OutboxEvent
from allot.kernel.presence import PresenceUnavailable, RedisPresence, set_presence_store
from allot.kernel.timers import TimerRunner
from tests.conftest import count_queries
from tests.contexts.routing.helpers import agent, make_agent, make_queue

GRACE = 180  # presence_grace_seconds' default


@pytest.fixture
def store(redis, redis_url, service_namespace):
    presence = RedisPresence(redis_url, service_namespace, 0.5)
    previous = set_presence_store(presence)
    yield presence
    set_presence_store(previous)


@pytest.fixture
def store_behind_proxy(redis, redis_url, proxy, service_namespace):
    presence = RedisPresence(proxy.url_through(redis_url), service_namespace, 0.5)
    previous = set_presence_store(presence)
    yield presence
    set_presence_store(previous)


async def beat(database, agent_id):
    async with database.transaction() as session:
        return await agent_service.heartbeat(session, agent_id)


async def status_changes(database, agent_id):
    async with database.reader() as session:
        audit = (await session.execute(select(AuditEntry).where(
            AuditEntry.action == "routing.agent.status_changed",
            AuditEntry.object_id == str(agent_id)))).scalars().all()  # fmt: skip
        events = (await session.execute(select(OutboxEvent).where(
            OutboxEvent.type == "routing.agent.status_changed",
            OutboxEvent.aggregateid == str(agent_id)))).scalars().all()  # fmt: skip
    return [e.after for e in audit], [e.payload["reason"] for e in events]


async def test_the_store_keeps_the_latest_beat_whichever_arrives_last(store, clock):
    now = clock.now()
    assert await store.beat("agents", "a1", now) is True  # the first beat it knows of
    assert await store.beat("agents", "a1", now + timedelta(seconds=60)) is False
    # A replica's late, older beat never moves the time backwards.
    assert await store.beat("agents", "a1", now + timedelta(seconds=30)) is False
    assert await store.last_beat("agents", "a1") == now + timedelta(seconds=60)
    assert await store.last_beat("agents", "a2") is None
    await store.forget("agents", "a1")
    assert await store.last_beat("agents", "a1") is None


async def test_a_beat_writes_no_row_and_a_silent_agent_still_goes_offline(database, clock, store):
    await make_queue(database)
    anna = await make_agent(database)
    runner = TimerRunner(database)
    clock.advance(120)
    await beat(database, anna.id)  # the first beat arms the presence timer (t=120+180=300)
    clock.advance(60)
    with count_queries(database) as counted:
        answered = await beat(database, anna.id)  # t=180
    assert answered.last_heartbeat_at == clock.now()  # the answer carries the beat ...
    writes = [s for s in counted.statements if s.lstrip().upper().startswith(("UPDATE", "INSERT"))]
    assert writes == []
    assert (await agent(database, anna.id)).last_heartbeat_at != clock.now()  # ... the row not
    clock.advance(179)  # t=359: the timer (t=300) fired, found the beat of t=180, moved to 360
    await runner.fire_due()
    assert (await agent(database, anna.id)).status == "available"
    assert (await agent(database, anna.id)).last_heartbeat_at == clock.now() - timedelta(
        seconds=179
    )  # the row caught up with the beat when the timer moved
    clock.advance(2)  # t=361: no beat since t=180
    await runner.fire_due()
    assert (await agent(database, anna.id)).status == "offline"
    audit, reasons = await status_changes(database, anna.id)
    assert audit == [{"status": "offline", "reason": "presence_lost"}]
    assert reasons == ["presence_lost"]
    assert await store.last_beat("agents", str(anna.id)) is None  # forgotten when it went


async def test_an_agent_that_keeps_beating_stays_online_for_hours(database, clock, store):
    await make_queue(database)
    anna = await make_agent(database)
    runner = TimerRunner(database)
    for _ in range(180):  # three hours of beats a minute apart, timers fired every minute
        clock.advance(60)
        await beat(database, anna.id)
        await runner.fire_due()
    assert (await agent(database, anna.id)).status == "available"
    assert await status_changes(database, anna.id) == ([], [])


async def test_while_redis_is_down_beats_go_to_the_row_and_the_verdict_waits_one_grace(
    database, clock, store_behind_proxy, proxy
):
    await make_queue(database)
    anna = await make_agent(database)
    proxy.cut()
    clock.advance(120)
    await beat(database, anna.id)  # Redis down: the row is the store, as without Redis
    assert (await agent(database, anna.id)).last_heartbeat_at == clock.now()
    runner = TimerRunner(database)
    clock.advance(GRACE - 1)  # t=299
    await runner.fire_due()
    assert (await agent(database, anna.id)).status == "available"
    clock.advance(2)  # t=301: due, but Redis cannot be read: the check waits a grace (t=481)
    await runner.fire_due()
    assert (await agent(database, anna.id)).status == "available"
    clock.advance(GRACE)  # t=481: still unreadable; the row (t=120) decides
    await runner.fire_due()
    assert (await agent(database, anna.id)).status == "offline"


async def test_redis_down_at_the_check_puts_nobody_offline_wrongly(
    database, clock, store_behind_proxy, proxy
):
    await make_queue(database)
    anna = await make_agent(database)  # keeps beating
    boris = await make_agent(database)  # went silent before the outage
    runner = TimerRunner(database)
    clock.advance(60)
    await beat(database, anna.id)  # both beat into Redis at t=60: timers at t=240
    await beat(database, boris.id)
    clock.advance(60)
    await beat(database, anna.id)  # t=120, Redis only: the rows still say t=0
    proxy.cut()
    with pytest.raises(PresenceUnavailable):
        await store_behind_proxy.last_beat("agents", str(anna.id))
    clock.advance(120)  # t=240: the timers fire while Redis cannot be read
    await runner.fire_due()
    assert (await agent(database, anna.id)).status == "available"  # rows were stale: no verdict
    assert (await agent(database, boris.id)).status == "available"
    store_behind_proxy.breaker.reset()
    clock.advance(60)
    await beat(database, anna.id)  # t=300: falls back to the row
    clock.advance(121)  # t=421: the second check decides from the rows
    await runner.fire_due()
    assert (await agent(database, anna.id)).status == "available"
    assert (await agent(database, boris.id)).status == "offline"
