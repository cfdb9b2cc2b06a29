"""Outbox, dispatcher and inbox: after-commit delivery, at-most-once effects, retries."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select

from allot.kernel.context import bound
from allot.kernel.db.engine import Database
from allot.kernel.events import (
    ConsumerRegistry,
    Dispatcher,
    Event,
    InboxEntry,
    OutboxEvent,
    pending_count,
    publish,
)
from tests.tcp_proxy import TcpProxy


async def _publish(database, payload=None, type_="test.thing.happened", correlation_id=None):
    with bound(correlation_id=correlation_id):
        async with database.transaction() as session:
            return await publish(
                session,
                type=type_,
                aggregate_type="test.thing",
                aggregate_id=uuid.uuid4(),
                payload=payload or {"n": 1},
            )


async def test_an_event_of_a_rolled_back_transaction_never_exists(database):
    with pytest.raises(RuntimeError):
        async with database.transaction() as session:
            await publish(session, type="t.x", aggregate_type="t", aggregate_id="1", payload={})
            raise RuntimeError("business rule failed after the event was written")
    async with database.reader() as session:
        assert await pending_count(session) == 0


async def test_consumers_get_the_payload_as_json_with_metadata(database):
    received = []
    consumers = ConsumerRegistry()

    @consumers.subscribe("test.collector", "test.thing.happened")
    async def collect(session, event):
        received.append(event)

    event_id = await _publish(database, {"ids": ("a", "b"), "amount": 5}, correlation_id="corr-42")
    handled = await Dispatcher(database, consumers).drain()

    assert handled == 1
    [event] = received
    assert event.id == event_id
    assert event.payload["ids"] == ["a", "b"]  # a tuple became a JSON array, as over a broker
    assert event.payload["schema_version"] == 1
    assert event.payload["correlation_id"] == "corr-42"
    assert event.correlation_id == "corr-42"
    async with database.reader() as session:
        row = await session.get(OutboxEvent, event_id)
        assert row.status == "dispatched"
        assert row.dispatched_at is not None


async def test_a_consumer_applies_each_event_at_most_once(database):
    applied = []
    consumers = ConsumerRegistry()

    @consumers.subscribe("test.counter", "test.thing.happened")
    async def count(session, event):
        applied.append(event.id)

    await _publish(database)
    dispatcher = Dispatcher(database, consumers)
    consumer = consumers.all()[0]
    await dispatcher.drain()
    async with database.reader() as session:
        row = (await session.execute(select(OutboxEvent))).scalar_one()
    # A redelivery (a broker retry, a second dispatcher) is recognised by the inbox.
    from allot.kernel.events.outbox import Event

    again = await dispatcher.apply(consumer, Event.from_row(row))
    assert again is False
    assert len(applied) == 1
    async with database.reader() as session:
        inbox = (await session.execute(select(func.count()).select_from(InboxEntry))).scalar()
    assert inbox == 1


async def test_a_failing_consumer_is_retried_later_and_others_are_not_repeated(database, clock):
    calls = {"good": 0, "flaky": 0}
    consumers = ConsumerRegistry()

    @consumers.subscribe("test.good", "test.thing.happened")
    async def good(session, event):
        calls["good"] += 1

    @consumers.subscribe("test.flaky", "test.thing.happened")
    async def flaky(session, event):
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise ConnectionError("downstream hiccup")

    event_id = await _publish(database)
    dispatcher = Dispatcher(database, consumers)
    await dispatcher.drain()
    async with database.reader() as session:
        row = await session.get(OutboxEvent, event_id)
        assert row.status == "pending"
        assert row.attempts == 1
        assert "downstream hiccup" in row.last_error

    assert await dispatcher.drain() == 0  # backoff: not due yet
    clock.advance(301)
    await dispatcher.drain()
    assert calls == {"good": 1, "flaky": 2}
    async with database.reader() as session:
        row = await session.get(OutboxEvent, event_id)
        assert row.status == "dispatched"


async def test_a_poison_event_is_marked_dead_and_does_not_block_the_next(database, clock):
    seen = []
    consumers = ConsumerRegistry()

    @consumers.subscribe("test.picky", "test.thing.happened")
    async def picky(session, event):
        if event.payload.get("poison"):
            raise ValueError("cannot handle this payload")
        seen.append(event.payload["n"])

    poison_id = await _publish(database, {"poison": True})
    await _publish(database, {"n": 2})
    dispatcher = Dispatcher(database, consumers, max_attempts=3)
    for _ in range(4):
        await dispatcher.drain()
        clock.advance(600)
    assert seen == [2]
    async with database.reader() as session:
        poison = await session.get(OutboxEvent, poison_id)
        assert poison.status == "dead"
        assert poison.attempts == 3


async def test_the_effect_and_the_inbox_row_commit_together(database):
    """A handler that fails after writing leaves neither its effect nor an inbox row behind."""
    consumers = ConsumerRegistry()

    @consumers.subscribe("test.half_writer", "test.thing.happened")
    async def half_writer(session, event):
        await publish(session, type="test.effect", aggregate_type="t", aggregate_id="x", payload={})
        raise RuntimeError("crash after the effect")

    await _publish(database)
    await Dispatcher(database, consumers).drain()
    async with database.reader() as session:
        effects = await session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.type == "test.effect")
        )
        inbox = await session.scalar(select(func.count()).select_from(InboxEntry))
    assert effects == 0
    assert inbox == 0


async def test_concurrent_dispatchers_apply_every_event_exactly_once(database):
    applied: list[uuid.UUID] = []
    consumers = ConsumerRegistry()

    @consumers.subscribe("test.tally", "test.thing.happened")
    async def tally(session, event):
        applied.append(event.id)
        await asyncio.sleep(0)

    ids = [await _publish(database, {"n": n}) for n in range(40)]
    dispatchers = [Dispatcher(database, consumers, batch_size=7) for _ in range(3)]
    await asyncio.gather(*(d.drain() for d in dispatchers))
    assert sorted(applied) == sorted(ids)
    assert len(set(applied)) == len(applied)


async def test_the_background_loop_dispatches_soon_after_commit(database):
    done = asyncio.Event()
    consumers = ConsumerRegistry()

    @consumers.subscribe("test.waker", "test.thing.happened")
    async def waker(session, event):
        done.set()

    dispatcher = Dispatcher(database, consumers, idle_poll_seconds=30)
    dispatcher.start()
    try:
        await asyncio.sleep(0)
        await _publish(database)
        # The commit wakes the loop; the 30 s poll interval would time this out otherwise.
        await asyncio.wait_for(done.wait(), timeout=5)
    finally:
        await dispatcher.stop()


async def test_a_non_durable_consumer_keeps_no_inbox_rows(database):
    seen = []
    consumers = ConsumerRegistry()

    @consumers.subscribe("test.refresh_screen", "test.thing.happened", durable=False)
    async def refresh(session, event):
        seen.append(event.id)

    await _publish(database)
    await Dispatcher(database, consumers).drain()
    assert len(seen) == 1
    async with database.reader() as session:
        assert await session.scalar(select(func.count()).select_from(InboxEntry)) == 0


async def test_a_consumer_is_handed_only_the_events_it_takes_and_keeps_inbox_rows_for_those(
    database,
):
    seen = []
    consumers = ConsumerRegistry()

    @consumers.subscribe(
        "test.follow_late", "test.thing.happened", takes=lambda e: not e.payload.get("early")
    )
    async def follow(session, event):
        seen.append(event.payload["n"])

    skipped = await _publish(database, {"n": 1, "early": True})
    taken = await _publish(database, {"n": 2})
    dispatcher = Dispatcher(database, consumers)
    assert await dispatcher.drain() == 2
    assert seen == [2]
    async with database.reader() as session:
        inbox = set(await session.scalars(select(InboxEntry.message_id)))
        statuses = set(await session.scalars(select(OutboxEvent.status)))
    assert inbox == {taken}  # nothing applied for the skipped one: nothing to remember
    assert statuses == {"dispatched"}  # the event is delivered, to whoever takes it
    # Through the path a broker worker uses too: the skipped event is not applied.
    async with database.reader() as session:
        row = await session.get(OutboxEvent, skipped)
    (consumer,) = consumers.all()
    assert await dispatcher.apply(consumer, Event.from_row(row)) is False
    assert seen == [2]


async def test_one_failing_event_in_a_batch_does_not_undo_or_repeat_the_others(database, clock):
    """A consumer gets a claimed batch in one unit of work; when one event fails, the batch is
    rolled back and re-applied event by event: the good ones take effect exactly once."""
    consumers = ConsumerRegistry()

    @consumers.subscribe("test.effect_writer", "test.thing.happened")
    async def effect_writer(session, event):
        await publish(
            session,
            type="test.effect",
            aggregate_type="t",
            aggregate_id=str(event.id),
            payload={"n": event.payload["n"]},
        )
        if event.payload["n"] == 2:
            raise RuntimeError("cannot take number two")

    ids = [await _publish(database, {"n": n}) for n in (1, 2, 3)]
    await Dispatcher(database, consumers).drain()
    async with database.reader() as session:
        effects = (
            await session.scalars(select(OutboxEvent).where(OutboxEvent.type == "test.effect"))
        ).all()
        inbox = await session.scalar(select(func.count()).select_from(InboxEntry))
        statuses = {event_id: (await session.get(OutboxEvent, event_id)).status for event_id in ids}
    assert sorted(e.payload["n"] for e in effects) == [1, 3]
    assert inbox == 2
    assert statuses == {ids[0]: "dispatched", ids[1]: "pending", ids[2]: "dispatched"}


async def test_a_redelivered_batch_applies_only_the_events_not_yet_applied(database):
    from allot.kernel.events.outbox import Event

    applied: list[uuid.UUID] = []
    consumers = ConsumerRegistry()

    @consumers.subscribe("test.batch", "test.thing.happened")
    async def record(session, event):
        applied.append(event.id)

    ids = [await _publish(database, {"n": n}) for n in range(5)]
    dispatcher = Dispatcher(database, consumers)
    [consumer] = consumers.all()
    async with database.reader() as session:
        rows = (await session.execute(select(OutboxEvent).order_by(OutboxEvent.id))).scalars()
        events = [Event.from_row(row) for row in rows]
    assert await dispatcher.apply_many(consumer, events[1:3]) == 2
    # The whole batch again (a broker redelivery, an expired claim): only the three others.
    assert await dispatcher.apply_many(consumer, events) == 3
    assert sorted(applied) == sorted(ids)
    async with database.reader() as session:
        inbox = (await session.execute(select(func.count()).select_from(InboxEntry))).scalar()
    assert inbox == 5


async def test_a_lost_connection_is_the_databases_only_while_it_does_not_answer(database_url):
    """`Database.lost_connection`, through a proxy the test cuts: what decides whether a
    failing event's try counts (dispatcher and broker worker). A network error while the
    database answers is the handler's own (an API it calls) and counts."""
    if database_url.startswith("sqlite"):
        pytest.skip("a network outage of the database is PostgreSQL's")
    proxy = await TcpProxy.for_url(database_url).start()
    database = Database(proxy.url_through(database_url), pool_size=1)
    dropped = ConnectionResetError("connection was closed in the middle of operation")
    try:
        assert not await database.lost_connection(dropped)  # it answers: the handler's error
        proxy.cut()
        assert await database.lost_connection(dropped)
        assert not await database.lost_connection(ValueError("bad payload"))  # not a network one
        proxy.restore()
        assert not await database.lost_connection(dropped)
    finally:
        await database.dispose()
        await proxy.close()


def test_the_consumers_of_a_type_follow_subscriptions_after_being_asked():
    consumers = ConsumerRegistry()

    async def handler(session, event):
        return None

    consumers.subscribe("test.first", "test.thing.happened")(handler)
    assert [c.name for c in consumers.consumers_for("test.thing.happened")] == ["test.first"]
    consumers.subscribe("test.second", "test.thing.happened", "test.other")(handler)
    assert [c.name for c in consumers.consumers_for("test.thing.happened")] == [
        "test.first",
        "test.second",
    ]
    consumers.unsubscribe("test.first")
    assert [c.name for c in consumers.consumers_for("test.thing.happened")] == ["test.second"]
    assert consumers.consumers_for("test.nobody") == ()
