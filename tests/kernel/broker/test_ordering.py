"""Per-key order in an ordered group: partition queues with a single active consumer, retries
inline, and a worker stopped mid-stream while a second one takes over."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict

import pytest

from allot.kernel.events import publish
from allot.kernel.events.broker import BrokerWorker, Relay, Topology
from allot.kernel.events.broker.topology import partition_of
from tests.kernel.broker.conftest import eventually

KEYS = 24
STEPS = 12


@pytest.mark.parametrize("quorum", [True, False], ids=["quorum", "classic"])
async def test_events_of_one_key_are_applied_in_order_by_parallel_workers(
    database, bus_settings, consumers, effects, quorum
):
    settings = bus_settings.model_copy(
        update={
            "broker_ordered_groups": "ordered",
            "broker_batch_size": 8,
            "broker_prefetch": 16,
            "broker_quorum_queues": quorum,
        }
    )
    failed_once: set[uuid.UUID] = set()

    @consumers.subscribe("ordered.tracker", "test.step")
    async def track(session, event):
        # Jitter (not synchronisation): handling times differ, so any reordering would show.
        await asyncio.sleep(random.uniform(0, 0.002))
        if event.payload["step"] == 3 and event.id not in failed_once:
            failed_once.add(event.id)  # one failure per key: its retry must not be overtaken
            raise ConnectionError("transient")
        await effects.record(
            session, event.id, "ordered.tracker", event.aggregate_id, event.payload["step"]
        )

    keys = [f"client-{n}" for n in range(KEYS)]
    topology = Topology.from_settings(settings)
    assert len({partition_of(k, topology.partitions) for k in keys}) == topology.partitions

    first = BrokerWorker(database, settings, consumers=consumers)
    second = BrokerWorker(database, settings, consumers=consumers)
    relay = Relay(database, settings, consumers=consumers)
    await first.start()
    await second.start()
    await relay.start()
    try:
        await eventually(_connected(first, second), what="workers consuming")
        for step in range(STEPS):
            async with database.transaction() as session:
                for key in keys:
                    await publish(
                        session,
                        type="test.step",
                        aggregate_type="test.client",
                        aggregate_id=key,
                        payload={"step": step},
                    )
        await eventually(lambda: _at_least(effects, KEYS * STEPS // 3), what="a third applied")
        await first.stop()  # mid-stream: the standby consumer of its partitions takes over
        await eventually(lambda: _at_least(effects, KEYS * STEPS), what="all applied")
    finally:
        await relay.stop()
        await second.stop()
        await first.stop()

    applied: dict[str, list[int]] = defaultdict(list)
    for _event_id, _consumer, key, step in await effects.rows():
        applied[key].append(step)
    assert applied == {key: list(range(STEPS)) for key in keys}  # each once, in order
    # Each message reached one partition queue only, and was acked once by one of the workers.
    assert first.acked + second.acked == KEYS * STEPS


def _connected(*workers: BrokerWorker):
    async def check() -> bool:
        return all(w.connected.is_set() for w in workers)

    return check


async def _at_least(effects, count: int) -> bool:
    return await effects.count() >= count
