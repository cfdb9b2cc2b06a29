"""The same scenarios in single-process mode (the in-process Dispatcher) and broker mode (relay,
RabbitMQ, worker), with the same handlers: effects once, poison events dead-lettered while the
others flow, the request's correlation id in the handler's context."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import pytest
from sqlalchemy import select

from allot.kernel import context
from allot.kernel.events import Dispatcher, OutboxEvent
from allot.kernel.events.broker import BrokerWorker, Relay, Topology, codec
from allot.kernel.events.broker.dead_letters import DeadLetterQueues
from allot.kernel.events.outbox import Event
from tests.kernel.broker.conftest import eventually, publish_events

Condition = Callable[[], Awaitable[bool]]


class InProcessBus:
    """Single-process mode; the clock is moved past each retry's backoff."""

    def __init__(self, database: Any, consumers: Any, clock: Any) -> None:
        self.database = database
        self.clock = clock
        self.dispatcher = Dispatcher(database, consumers, max_attempts=3)
        self.consumers = consumers

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def settle(self, condition: Condition) -> None:
        for _ in range(20):
            await self.dispatcher.drain()
            if await condition():
                return
            self.clock.advance(600)
        raise AssertionError("in-process bus did not settle")

    async def redeliver(self, events: list[Event]) -> None:
        for event in events:
            for consumer in self.consumers.consumers_for(event.type):
                await self.dispatcher.apply(consumer, event)

    async def dead_event_ids(self) -> list[str]:
        async with self.database.reader() as session:
            rows = await session.execute(select(OutboxEvent.id).where(OutboxEvent.status == "dead"))
            return [str(i) for i in rows.scalars()]


class BrokerBus:
    def __init__(self, database: Any, settings: Any, consumers: Any) -> None:
        self.settings = settings
        self.topology = Topology.from_settings(settings)
        self.relay = Relay(database, settings, consumers=consumers)
        self.worker = BrokerWorker(database, settings, consumers=consumers)

    async def start(self) -> None:
        await self.relay.start()
        await self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()
        await self.relay.stop()

    async def settle(self, condition: Condition) -> None:
        await eventually(condition, what="broker bus settled")

    async def redeliver(self, events: list[Event]) -> None:
        """Publish the same messages again and wait until the worker finished them."""
        before = self.worker.acked
        connection = await aio_pika.connect(self.settings.broker_url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(self.topology.events_exchange)
            for event in events:
                props = codec.properties(event, self.topology.partitions)
                message = aio_pika.Message(
                    codec.encode_body(event), message_id=props.message_id, headers=props.headers
                )
                await exchange.publish(message, routing_key=event.type)
        finally:
            await connection.close()

        async def consumed() -> bool:
            return self.worker.acked >= before + len(events)

        await eventually(consumed, what="redeliveries consumed")

    async def dead_event_ids(self) -> list[str]:
        connection = await aio_pika.connect(self.settings.broker_url)
        try:
            dead = await DeadLetterQueues(connection, self.topology).peek(
                list(self.worker.groups), 100
            )
        finally:
            await connection.close()
        return [m.event_id for m in dead]


@pytest.fixture(params=["in_process", "broker"])
async def bus(request, database, consumers, clock):
    if request.param == "in_process":
        harness: Any = InProcessBus(database, consumers, clock)
    else:
        harness = BrokerBus(database, request.getfixturevalue("bus_settings"), consumers)
    yield harness
    await harness.stop()


async def test_each_effect_happens_once_even_when_events_come_again(
    bus, database, consumers, effects
):
    @consumers.subscribe("ledger.entries", "test.thing.happened")
    async def entries(session, event):
        await effects.record(session, event.id, "ledger.entries")

    @consumers.subscribe("notes.copies", "test.thing.happened")
    async def copies(session, event):
        await effects.record(session, event.id, "notes.copies")

    await bus.start()
    ids = await publish_events(database, 15)

    async def all_applied() -> bool:
        return await effects.count() >= 30

    await bus.settle(all_applied)
    async with database.reader() as session:
        rows = (await session.execute(select(OutboxEvent))).scalars().all()
    await bus.redeliver([Event.from_row(row) for row in rows])

    assert sorted((e, c) for e, c, *_ in await effects.rows()) == sorted(
        [(str(i), "ledger.entries") for i in ids] + [(str(i), "notes.copies") for i in ids]
    )


async def test_a_poison_event_is_dead_lettered_and_the_others_flow(
    bus, database, consumers, effects
):
    @consumers.subscribe("picky.handler", "test.thing.happened")
    async def picky(session, event):
        if event.payload.get("poison"):
            raise ValueError("cannot handle this payload")
        await effects.record(session, event.id, "picky.handler")

    await bus.start()
    [poison] = await publish_events(database, 1, payload={"poison": True})
    fine = await publish_events(database, 4)

    async def settled() -> bool:
        return await effects.count() >= 4 and bool(await bus.dead_event_ids())

    await bus.settle(settled)
    assert await bus.dead_event_ids() == [str(poison)]
    assert sorted(e for e, *_ in await effects.rows()) == sorted(str(i) for i in fine)


async def test_the_requests_correlation_id_reaches_the_handler(bus, database, consumers):
    seen: list[tuple[str | None, str | None]] = []

    @consumers.subscribe("trace.handler", "test.thing.happened")
    async def trace(session, event):
        seen.append((event.correlation_id, context.current_correlation_id()))

    await bus.start()
    await publish_events(database, 1, correlation_id="req-7f3a")
    await publish_events(database, 1, correlation_id="req-9b2c")

    async def both() -> bool:
        return len(seen) >= 2

    await bus.settle(both)
    assert sorted(seen) == [("req-7f3a", "req-7f3a"), ("req-9b2c", "req-9b2c")]
