"""A running dispatcher takes its own process's commits in memory (outbox O1-O3): leased at
birth, never claimed by another meanwhile, handed back when it stops; events nobody takes are
born dispatched; past its limit, new events wait in the outbox for a claim as before."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from allot.kernel.clock import utcnow
from allot.kernel.events import ConsumerRegistry, Dispatcher, OutboxEvent
from allot.kernel.events import dispatcher as dispatcher_module
from allot.kernel.events.dispatcher import CLAIM_SECONDS, claim_due
from allot.kernel.events.outbox import dispatch_committed_events_locally
from tests.kernel.test_events import _publish


async def _row(database, event_id) -> OutboxEvent:
    async with database.reader() as session:
        row = await session.get(OutboxEvent, event_id)
        assert row is not None
        return row


def _gated_consumer(consumers: ConsumerRegistry, **options):
    """A consumer that records what it gets and holds the dispatcher until the gate opens. Not
    durable: a durable one would hold the writer (SQLite) while it waits, and the test's own
    writes would wait for it."""
    received: list = []
    gate = asyncio.Event()
    entered = asyncio.Event()

    @consumers.subscribe("test.gated", "test.thing.happened", durable=False, **options)
    async def gated(session, event):
        entered.set()
        await gate.wait()
        received.append(event)

    return received, gate, entered


async def _until(condition, seconds=5.0):
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_commit_is_handed_to_the_running_dispatcher_leased_so_no_claim_takes_it(database):
    consumers = ConsumerRegistry()
    received, gate, entered = _gated_consumer(consumers)
    dispatcher = Dispatcher(database, consumers, idle_poll_seconds=30)
    dispatcher.start()
    try:
        before = utcnow()
        event_id = await _publish(database, {"ids": ("a", "b")})
        row = await _row(database, event_id)
        assert row.status == "pending"
        assert row.claimed_until is not None
        assert row.claimed_until >= before + timedelta(seconds=CLAIM_SECONDS)
        # Another dispatcher or relay claiming now finds nothing: the row is this one's.
        assert await claim_due(database, 100) == []
        await asyncio.wait_for(entered.wait(), timeout=5)
        gate.set()
        await _until(lambda: bool(received))
        await _until(lambda: dispatcher._handed == [])
    finally:
        gate.set()
        await dispatcher.stop()
    [event] = received
    assert event.id == event_id
    assert event.payload["ids"] == ["a", "b"]  # as the JSON column holds it, not the tuple
    assert event.payload["schema_version"] == 1
    await _until_dispatched(database, event_id)


async def _until_dispatched(database, event_id, seconds=5.0):
    deadline = asyncio.get_running_loop().time() + seconds
    while (await _row(database, event_id)).status != "dispatched":
        assert asyncio.get_running_loop().time() < deadline, "never marked dispatched"
        await asyncio.sleep(0.02)


async def test_an_event_no_consumer_takes_is_born_dispatched_only_with_a_dispatcher_running(
    database,
):
    consumers = ConsumerRegistry()
    _gated_consumer(consumers, takes=lambda event: not event.payload.get("early"))
    # No dispatcher in this process (a broker relay's API process, a CLI): every event waits.
    waiting = await _publish(database, {"early": True})
    assert (await _row(database, waiting)).status == "pending"

    dispatcher = Dispatcher(database, consumers, idle_poll_seconds=30)
    dispatcher.start()
    try:
        skipped = await _publish(database, {"early": True})
        unknown = await _publish(database, {"n": 1}, type_="test.nobody.listens")
    finally:
        await dispatcher.stop()
    for event_id in (skipped, unknown):
        row = await _row(database, event_id)
        assert (row.status, row.claimed_until) == ("dispatched", None)
        assert row.dispatched_at == row.created_at


async def test_past_its_limit_new_events_wait_in_the_outbox_and_are_claimed(database, monkeypatch):
    monkeypatch.setattr(dispatcher_module, "MAX_HANDED_EVENTS", 2)
    consumers = ConsumerRegistry()
    received, gate, entered = _gated_consumer(consumers)
    dispatcher = Dispatcher(database, consumers, idle_poll_seconds=0.05)
    dispatcher.start()
    try:
        first = await _publish(database, {"n": 0})
        await asyncio.wait_for(entered.wait(), timeout=5)  # the first round holds event 0
        later = [await _publish(database, {"n": n}) for n in range(1, 5)]
        leases = [(await _row(database, event_id)).claimed_until for event_id in later]
        assert [lease is not None for lease in leases] == [True, True, False, False]
        gate.set()
        await _until(lambda: len(received) == 5)
    finally:
        gate.set()
        await dispatcher.stop()
    assert sorted(event.payload["n"] for event in received) == [0, 1, 2, 3, 4]
    for event_id in (first, *later):
        await _until_dispatched(database, event_id)


async def test_stopping_gives_back_the_leases_of_events_not_yet_delivered(database):
    consumers = ConsumerRegistry()
    received, gate, entered = _gated_consumer(consumers)
    dispatcher = Dispatcher(database, consumers, idle_poll_seconds=30, batch_size=1)
    dispatcher.start()
    first = await _publish(database, {"n": 0})
    await asyncio.wait_for(entered.wait(), timeout=5)
    second = await _publish(database, {"n": 1})  # handed over, not yet taken by a round
    assert (await _row(database, second)).claimed_until is not None
    stopping = asyncio.create_task(dispatcher.stop())
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.wait_for(stopping, timeout=5)
    assert [event.id for event in received] == [first]
    row = await _row(database, second)
    assert (row.status, row.claimed_until) == ("pending", None)
    # The next dispatcher (after a restart) takes it at once, without waiting out a lease.
    assert await Dispatcher(database, consumers).drain() == 1
    assert [event.id for event in received] == [first, second]


async def test_events_of_a_process_that_died_are_claimed_once_their_lease_runs_out(database, clock):
    consumers = ConsumerRegistry()
    received, gate, _entered = _gated_consumer(consumers)
    gate.set()
    dispatcher = Dispatcher(database, consumers, idle_poll_seconds=30)
    # Handed over, then the process "dies": the loop never runs, nothing is released.
    dispatch_committed_events_locally(database.write_engine.sync_engine, dispatcher)
    try:
        event_id = await _publish(database, {"n": 1})
    finally:
        dispatch_committed_events_locally(database.write_engine.sync_engine, None)
    survivor = Dispatcher(database, consumers)
    assert await survivor.drain() == 0  # still leased to the dead process
    clock.advance(CLAIM_SECONDS + 1)
    assert await survivor.drain() == 1
    assert [event.id for event in received] == [event_id]
