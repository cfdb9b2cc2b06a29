"""Several relay replicas: one relays at a time (PostgreSQL session advisory lock), the others
stand by and take over when the leader's lock connection drops or it stops; nothing is lost or
published twice on the way."""

from __future__ import annotations

import aio_pika
import pytest
from sqlalchemy import func, select, text

from allot.kernel.events import OutboxEvent
from allot.kernel.events.broker import Relay, Topology
from allot.kernel.events.broker.relay import lock_key
from tests.kernel.broker.conftest import eventually, publish_events

STANDBY_SECONDS = 0.2


@pytest.fixture
def replica_settings(database, bus_settings, consumers):
    if database.is_sqlite:
        pytest.skip("SQLite runs one relay process: no lock, no replicas")

    @consumers.subscribe("tally.counter", "test.thing.happened")
    async def count(session, event):  # pragma: no cover - no worker runs here
        pass

    return bus_settings.model_copy(update={"broker_relay_standby_seconds": STANDBY_SECONDS})


async def _dispatched(database) -> int:
    async with database.reader() as session:
        stmt = (
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.status == "dispatched")
        )
        return int((await session.execute(stmt)).scalar_one())


async def _drain_ids(url: str, queue_name: str) -> list[str]:
    """Every message id in the queue (taken and acked: the queue is the test's own)."""
    connection = await aio_pika.connect(url)
    ids: list[str] = []
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        while (message := await queue.get(fail=False)) is not None:
            ids.append(str(message.message_id))
            await message.ack()
    finally:
        await connection.close()
    return ids


async def _lock_holders(database, key: int) -> set[int]:
    async with database.reader() as session:
        rows = await session.execute(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND objid = CAST(:key AS bigint)::oid"
            ),
            {"key": key},
        )
        return {int(pid) for pid in rows.scalars()}


async def test_one_replica_relays_and_another_takes_over_when_its_lock_goes(
    database, replica_settings, consumers, rabbitmq_url
):
    first = Relay(database, replica_settings, consumers=consumers)
    second = Relay(database, replica_settings, consumers=consumers)
    await first.start()
    try:
        await eventually(lambda: _is_set(first.leading), what="the first replica leads")
        await second.start()
        await eventually(lambda: _is_set(second.connected), what="the second replica is up")
        key = lock_key(replica_settings.broker_namespace)
        assert await _lock_holders(database, key) == {first.lock_pid}

        ids = await publish_events(database, 30)
        await eventually(lambda: _count_is(database, 30), what="30 dispatched")
        assert (first.published, second.published) == (30, 0)
        assert not second.leading.is_set()

        # The leader's lock connection drops (its backend is terminated): the lock is gone, the
        # leader claims nothing more and the standby takes over.
        async with database.transaction() as session:
            await session.execute(
                text("SELECT pg_terminate_backend(:pid)"), {"pid": first.lock_pid}
            )
        ids += await publish_events(database, 30)
        await eventually(lambda: _is_set(second.leading), what="the second replica takes over")
        await eventually(lambda: _count_is(database, 60), what="60 dispatched")
        # Written right after its lock went, all 30 were left to the new leader: the old one
        # claimed nothing without the lock (every claim requires it).
        assert (first.published, second.published) == (30, 30)
        assert await _lock_holders(database, key) == {second.lock_pid}

        # The new leader stops: the first replica (standing by again) takes over.
        await second.stop()
        ids += await publish_events(database, 30)
        await eventually(lambda: _is_set(first.leading), what="the first replica leads again")
        await eventually(lambda: _count_is(database, 90), what="90 dispatched")
    finally:
        await first.stop()
        await second.stop()

    # Nothing lost, nothing published twice: the group's queue holds each event exactly once.
    assert first.published + second.published == 90
    queue = Topology.from_settings(replica_settings).queue("tally")
    published = await _drain_ids(rabbitmq_url, queue)
    assert sorted(published) == sorted(str(i) for i in ids)


async def _is_set(event) -> bool:
    return bool(event.is_set())


async def _count_is(database, count: int) -> bool:
    return await _dispatched(database) == count
