"""Relay and worker against the real RabbitMQ: confirms before marking, effect once under
duplicates, retries then dead letters, outages of the broker."""

from __future__ import annotations

import aio_pika
import pytest
from sqlalchemy import func, select

from allot.kernel.events import InboxEntry, OutboxEvent, publish
from allot.kernel.events.broker import BrokerWorker, Relay, Topology, codec
from allot.kernel.events.broker.dead_letters import DeadLetterQueues
from allot.kernel.events.broker.relay import PublishFailed
from allot.kernel.events.broker.topology import partition_of
from allot.kernel.events.outbox import Event
from tests.kernel.broker.conftest import eventually, publish_events


async def _statuses(database) -> dict[str, int]:
    async with database.reader() as session:
        rows = await session.execute(
            select(OutboxEvent.status, func.count()).group_by(OutboxEvent.status)
        )
        return dict(rows.all())  # type: ignore[arg-type]


async def _queue_depth(url: str, name: str) -> int:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def test_the_relay_publishes_committed_events_and_marks_them_after_the_confirm(
    database, bus_settings, consumers
):
    @consumers.subscribe("tally.counter", "test.thing.happened")
    async def count(session, event):  # pragma: no cover - no worker runs here
        pass

    with pytest.raises(RuntimeError):
        async with database.transaction() as session:
            await publish(
                session,
                type="test.thing.happened",
                aggregate_type="t",
                aggregate_id="rolled-back",
                payload={},
            )
            raise RuntimeError("the business transaction fails")
    committed = await publish_events(database, 5)

    relay = Relay(database, bus_settings, consumers=consumers)
    await relay.start()
    try:
        await eventually(lambda: _all_dispatched(database, 5), what="5 events dispatched")
    finally:
        await relay.stop()
    # Exactly the committed events wait in the group's queue (nothing of the rolled-back one),
    # each with its id, type, persistence and body.
    topology = Topology.from_settings(bus_settings)
    connection = await aio_pika.connect(bus_settings.broker_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(topology.queue("tally"), passive=True)
        messages = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            messages.append(message)
    finally:
        await connection.close()
    assert [m.message_id for m in messages] == [str(i) for i in committed]
    assert {m.delivery_mode for m in messages} == {aio_pika.DeliveryMode.PERSISTENT}
    assert {m.content_type for m in messages} == {"application/json"}
    assert [codec.decode(m.body).payload["n"] for m in messages] == [0, 1, 2, 3, 4]


async def _all_dispatched(database, count: int) -> bool:
    return (await _statuses(database)).get("dispatched", 0) == count


async def test_a_nack_or_lost_confirm_leaves_the_batch_pending(database, bus_settings, consumers):
    """Publishing to an exchange that does not exist closes the channel: no confirm, so no row
    may be marked dispatched."""

    @consumers.subscribe("tally.counter", "test.thing.happened")
    async def count(session, event):  # pragma: no cover
        pass

    await publish_events(database, 3)
    relay = Relay(database, bus_settings, consumers=consumers)
    relay.topology = Topology(
        namespace=bus_settings.broker_namespace + "-missing",
        quorum=True,
        partitions=4,
        ordered_groups=frozenset(),
    )
    relay._channel = None
    connection = await aio_pika.connect_robust(bus_settings.broker_url)
    try:
        relay._channel = await connection.channel(publisher_confirms=True)
        with pytest.raises(PublishFailed):
            await relay.relay_batch()
    finally:
        await relay.stop()  # its lock (PostgreSQL)
        await connection.close()
    assert await _statuses(database) == {"pending": 3}
    async with database.reader() as session:
        claimed = (await session.execute(select(OutboxEvent.claimed_until))).scalars().all()
    assert claimed == [None, None, None]  # released: retried at once, not after the lease


async def test_each_event_is_applied_once_per_consumer_even_when_delivered_twice(
    database, bus_settings, consumers, effects
):
    @consumers.subscribe("tally.first", "test.thing.happened")
    async def first(session, event):
        await effects.record(session, event.id, "tally.first")

    @consumers.subscribe("tally.second", "test.thing.happened")
    async def second(session, event):
        await effects.record(session, event.id, "tally.second")

    ids = await publish_events(database, 20)
    relay = Relay(database, bus_settings, consumers=consumers)
    worker = BrokerWorker(database, bus_settings, consumers=consumers)
    await relay.start()
    await worker.start()
    try:
        await eventually(lambda: _effects_count(effects, 40), what="40 effects")
        # The same messages again, as a relay that lost its confirms would send them.
        async with database.reader() as session:
            rows = (await session.execute(select(OutboxEvent))).scalars().all()
        await _republish(bus_settings, [Event.from_row(row) for row in rows])
        await eventually(lambda: _acked(worker, 40), what="duplicates consumed")
    finally:
        await worker.stop()
        await relay.stop()
    effect_rows = await effects.rows()
    assert sorted((e, c) for e, c, _k, _s in effect_rows) == sorted(
        [(str(i), "tally.first") for i in ids] + [(str(i), "tally.second") for i in ids]
    )
    async with database.reader() as session:
        inbox = (await session.execute(select(func.count()).select_from(InboxEntry))).scalar()
    assert inbox == 40


async def _effects_count(effects, expected: int) -> bool:
    return await effects.count() >= expected


async def _acked(worker: BrokerWorker, expected: int) -> bool:
    return worker.acked >= expected


async def _republish(settings, events: list[Event]) -> None:
    topology = Topology.from_settings(settings)
    connection = await aio_pika.connect(settings.broker_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.events_exchange)
        for event in events:
            props = codec.properties(event, topology.partitions)
            await exchange.publish(
                aio_pika.Message(
                    codec.encode_body(event),
                    message_id=props.message_id,
                    headers=props.headers,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=event.type,
            )
    finally:
        await connection.close()


async def test_a_failing_handler_is_retried_then_dead_lettered_and_the_queue_keeps_flowing(
    database, bus_settings, consumers, effects
):
    calls: dict[str, int] = {}

    @consumers.subscribe("picky.handler", "test.thing.happened")
    async def picky(session, event):
        calls[event.payload["name"]] = calls.get(event.payload["name"], 0) + 1
        if event.payload["name"] == "poison":
            raise ValueError("cannot handle this payload")
        if event.payload["name"] == "flaky" and calls["flaky"] < 2:
            raise ConnectionError("downstream hiccup")
        await effects.record(session, event.id, "picky.handler", event.payload["name"])

    [poison] = await publish_events(database, 1, payload={"name": "poison"})
    await publish_events(database, 1, payload={"name": "flaky"})
    await publish_events(database, 1, payload={"name": "fine"})
    relay = Relay(database, bus_settings, consumers=consumers)
    worker = BrokerWorker(database, bus_settings, consumers=consumers)
    await relay.start()
    await worker.start()
    try:
        await eventually(lambda: _acked(worker, 3), what="all three finished")
    finally:
        await worker.stop()
        await relay.stop()
    assert sorted(key for _e, _c, key, _s in await effects.rows()) == ["fine", "flaky"]
    # broker_max_attempts = 3 tries alone; when the three arrive together, a first try in their
    # batch comes before (its unit of work rolls back, as the Dispatcher's does).
    assert calls["poison"] in (3, 4)
    assert calls["flaky"] in (2, 3)
    assert calls["fine"] in (1, 2)
    topology = Topology.from_settings(bus_settings)
    connection = await aio_pika.connect(bus_settings.broker_url)
    try:
        [dead] = await DeadLetterQueues(connection, topology).peek(["picky"], limit=10)
    finally:
        await connection.close()
    assert dead.event_id == str(poison)
    assert dead.consumer == "picky.handler"
    assert dead.attempts == "3"
    assert "ValueError: cannot handle this payload" in dead.error
    assert dead.routing_key == "test.thing.happened"
    assert dead.first_failure <= dead.last_failure
    assert dead.first_failure
    assert await _queue_depth(bus_settings.broker_url, topology.queue("picky")) == 0


async def test_broker_down_keeps_events_pending_and_they_drain_when_it_is_back(
    database, bus_settings, consumers, effects, proxy
):
    @consumers.subscribe("tally.counter", "test.thing.happened")
    async def count(session, event):
        await effects.record(session, event.id, "tally.counter")

    proxy.cut()  # connections refused
    through_proxy = bus_settings.model_copy(
        update={"broker_url": proxy.url_through(bus_settings.broker_url)}
    )
    relay = Relay(database, through_proxy, consumers=consumers)
    await relay.start()
    try:
        ids = await publish_events(database, 10)  # writers never need the broker
        await eventually(lambda: _attempted_connects(relay), what="relay tried and failed")
        assert await _statuses(database) == {"pending": 10}
        proxy.restore()
        await eventually(lambda: _all_dispatched(database, 10), what="outbox drained")
        # Cut again mid-stream: the next events wait, then go once the broker is back.
        proxy.cut()
        more = await publish_events(database, 5)
        proxy.restore()
        await eventually(lambda: _all_dispatched(database, 15), what="second outage drained")
    finally:
        await relay.stop()
    worker = BrokerWorker(database, bus_settings, consumers=consumers)
    await worker.start()
    try:
        await eventually(lambda: _effects_count(effects, 15), what="15 effects")
    finally:
        await worker.stop()
    assert sorted(e for e, *_ in await effects.rows()) == sorted(str(i) for i in ids + more)


async def _attempted_connects(relay: Relay) -> bool:
    return relay.connect_failures >= 2


async def test_a_worker_that_loses_its_connection_mid_stream_applies_each_event_once(
    database, bus_settings, consumers, effects, proxy
):
    @consumers.subscribe("tally.counter", "test.thing.happened")
    async def count(session, event):
        await effects.record(session, event.id, "tally.counter")

    through_proxy = proxy.url_through(bus_settings.broker_url)
    worker = BrokerWorker(
        database, bus_settings.model_copy(update={"broker_url": through_proxy}), consumers=consumers
    )
    relay = Relay(database, bus_settings, consumers=consumers)
    await relay.start()
    await worker.start()
    ids = []
    try:
        for _ in range(10):
            ids += await publish_events(database, 30)
        await eventually(lambda: _effects_count(effects, 60), what="a fifth applied")
        proxy.cut()  # every connection through the proxy is cut, mid-stream
        proxy.restore()
        await eventually(lambda: _effects_count(effects, 300), what="all applied")
        await eventually(lambda: _queue_empty(bus_settings), what="queue drained")
        # The restored consumer delivers straight to the worker again (no aio-pika wrapper).
        [runner] = worker._runners
        underlay = await runner.channel.get_underlay_channel()
        assert underlay.consumers[runner._consumer_tag] == runner._on_message
    finally:
        await worker.stop()
        await relay.stop()
    applied = [event_id for event_id, *_ in await effects.rows()]
    assert sorted(applied) == sorted(str(i) for i in ids)  # none lost, none twice


async def _queue_empty(settings) -> bool:
    topology = Topology.from_settings(settings)
    return await _queue_depth(settings.broker_url, topology.queue("tally")) == 0


async def test_a_worker_that_cannot_declare_its_queue_keeps_trying(
    database, bus_settings, consumers, effects
):
    """A queue left with other arguments (classic, the settings say quorum) is refused by
    RabbitMQ: the worker says so and tries again instead of silently consuming nothing."""

    @consumers.subscribe("tally.counter", "test.thing.happened")
    async def count(session, event):
        await effects.record(session, event.id, "tally.counter")

    topology = Topology.from_settings(bus_settings)
    connection = await aio_pika.connect(bus_settings.broker_url)
    channel = await connection.channel()
    await channel.declare_queue(
        topology.queue("tally"), durable=True, arguments={"x-queue-type": "classic"}
    )
    worker = BrokerWorker(database, bus_settings, consumers=consumers)
    await worker.start()
    try:

        async def failed_twice() -> bool:
            return worker.setup_failures >= 2

        await eventually(failed_twice, what="two failed attempts")
        assert not worker.connected.is_set()
        await channel.queue_delete(topology.queue("tally"))
        await eventually(_connected(worker), what="consuming once the queue is gone")
        relay = Relay(database, bus_settings, consumers=consumers)
        await relay.start()
        try:
            await publish_events(database, 3)
            await eventually(lambda: _effects_count(effects, 3), what="3 effects")
        finally:
            await relay.stop()
    finally:
        await worker.stop()
        await connection.close()


def _connected(worker: BrokerWorker):
    async def check() -> bool:
        return worker.connected.is_set()

    return check


async def test_a_replayed_dead_letter_of_an_ordered_group_goes_back_to_its_partition(
    database, bus_settings, consumers
):
    settings = bus_settings.model_copy(update={"broker_ordered_groups": "picky"})
    failing = {"on": True}

    @consumers.subscribe("picky.handler", "test.thing.happened")
    async def picky(session, event):
        if failing["on"]:
            raise ValueError("not yet")

    relay = Relay(database, settings, consumers=consumers)
    worker = BrokerWorker(database, settings, consumers=consumers)
    await relay.start()
    await worker.start()
    try:
        [event_id] = await publish_events(database, 1, key="client-42")

        async def dead() -> bool:
            return worker.dead_lettered == 1

        await eventually(dead, what="dead-lettered")
    finally:
        await worker.stop()
        await relay.stop()
    topology = Topology.from_settings(settings)
    connection = await aio_pika.connect(settings.broker_url)
    try:
        replayed = await DeadLetterQueues(connection, topology).replay(["picky"], str(event_id))
    finally:
        await connection.close()
    assert replayed == 1
    partition = partition_of("client-42", topology.partitions)
    depths = [
        await _queue_depth(settings.broker_url, topology.partition_queue("picky", i))
        for i in range(topology.partitions)
    ]
    assert depths == [1 if i == partition else 0 for i in range(topology.partitions)]
    assert await _queue_depth(settings.broker_url, topology.dead_queue("picky")) == 0
