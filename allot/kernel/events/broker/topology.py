"""RabbitMQ topology of broker mode: names, queue arguments and their (idempotent) declaration.

All names start with `settings.broker_namespace` (`<ns>` below):

- `<ns>.events`: durable topic exchange; the relay publishes every event to it with the event
  type as routing key.
- A consumer group is the consumers whose names share the part before the first "." (the
  context: "audit.on_user_changed" is in group "audit"). Each group has one durable queue
  `<ns>.<group>` bound to `<ns>.events` by each event type its consumers take.
- An ordered group (`broker_ordered_groups`) gets instead a headers exchange
  `<ns>.<group>.partitions`, bound to `<ns>.events` by the same event types (exchange to
  exchange), routing on the `allot-partition` header the relay sets to N queues `<ns>.<group>.p<i>`
  declared with `x-single-active-consumer`: one consumer at a time per partition, so a key's
  events are handled in the order they were published. No plugin is needed.
- `<ns>.dead`: direct exchange; `<ns>.<group>.dead` takes the group's dead letters (routing key
  = group). The group's queues name it as their dead-letter exchange too, so a quorum queue's
  own delivery limit (a message that keeps crashing its worker) ends there as well.

Declaring is idempotent; a queue that exists with other arguments (quorum vs classic, another
partition count) is refused by RabbitMQ (PRECONDITION_FAILED): changing them means new names
(another namespace) or deleting the old queues once drained.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from allot.kernel.config import Settings
from allot.kernel.events.outbox import Event
from allot.kernel.events.registry import Consumer, ConsumerRegistry, registry

# Not "x-partition": a headers exchange ignores every header and binding argument starting with
# "x-" when matching, so such a binding would match every message (each partition queue would
# get a copy of everything).
PARTITION_HEADER = "allot-partition"
# A quorum queue dead-letters a message delivered this many times without an ack: only a
# message that kills its worker again and again gets there (ordinary failures are retried and
# dead-lettered by the worker itself, with the error).
DELIVERY_LIMIT = 20


def group_of(consumer_name: str) -> str:
    return consumer_name.split(".", 1)[0]


def consumer_groups(consumers: ConsumerRegistry = registry) -> dict[str, list[Consumer]]:
    """Consumer group name -> its consumers (the part of the name before the first ".")."""
    groups: dict[str, list[Consumer]] = {}
    for consumer in sorted(consumers.all(), key=lambda c: c.name):
        groups.setdefault(group_of(consumer.name), []).append(consumer)
    return groups


def partition_key(event: Event) -> str:
    """What a per-key order is kept for: `headers["partition_key"]` if the publisher set one,
    else the aggregate (the same lead, item or customer)."""
    return str(event.headers.get("partition_key") or event.aggregate_id)


def partition_of(key: str, partitions: int) -> int:
    """Stable across processes and versions (Python's own hash is salted per process)."""
    return zlib.crc32(key.encode()) % partitions


@dataclass(frozen=True, slots=True)
class Topology:
    namespace: str
    quorum: bool
    partitions: int
    ordered_groups: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        ordered = {g.strip() for g in settings.broker_ordered_groups.split(",") if g.strip()}
        return cls(
            namespace=settings.broker_namespace,
            quorum=settings.broker_quorum_queues,
            partitions=max(1, settings.broker_partitions),
            ordered_groups=frozenset(ordered),
        )

    # -- names -------------------------------------------------------------------------------
    @property
    def events_exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def dead_exchange(self) -> str:
        return f"{self.namespace}.dead"

    def queue(self, group: str) -> str:
        return f"{self.namespace}.{group}"

    def dead_queue(self, group: str) -> str:
        return f"{self.namespace}.{group}.dead"

    def partition_exchange(self, group: str) -> str:
        return f"{self.namespace}.{group}.partitions"

    def partition_queue(self, group: str, partition: int) -> str:
        return f"{self.namespace}.{group}.p{partition}"

    def is_ordered(self, group: str) -> bool:
        return group in self.ordered_groups

    def consumed_queues(self, group: str) -> list[str]:
        if self.is_ordered(group):
            return [self.partition_queue(group, i) for i in range(self.partitions)]
        return [self.queue(group)]

    def all_names(self, groups: list[str]) -> tuple[list[str], list[str]]:
        """(exchanges, queues) this topology declares for `groups` (tests delete them)."""
        exchanges = [self.events_exchange, self.dead_exchange]
        queues = []
        for group in groups:
            queues += [*self.consumed_queues(group), self.dead_queue(group)]
            if self.is_ordered(group):
                exchanges.append(self.partition_exchange(group))
        return exchanges, queues

    # -- arguments ---------------------------------------------------------------------------
    def _queue_arguments(self, group: str, *, dead: bool = False) -> dict[str, Any]:
        arguments: dict[str, Any] = {"x-queue-type": "quorum" if self.quorum else "classic"}
        if not dead:
            arguments["x-dead-letter-exchange"] = self.dead_exchange
            arguments["x-dead-letter-routing-key"] = group
            if self.quorum:
                arguments["x-delivery-limit"] = DELIVERY_LIMIT
        return arguments

    # -- declaration -------------------------------------------------------------------------
    async def declare_exchanges(self, channel: AbstractChannel) -> AbstractExchange:
        """The events and dead-letter exchanges; returns the events exchange."""
        await channel.declare_exchange(
            self.dead_exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )
        return await channel.declare_exchange(
            self.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )

    async def declare_group(
        self, channel: AbstractChannel, group: str, consumers: list[Consumer]
    ) -> list[AbstractQueue]:
        """The group's queues, bindings and dead-letter queue; returns the queues to consume."""
        events = await self.declare_exchanges(channel)
        event_types = sorted({t for consumer in consumers for t in consumer.event_types})
        dead = await channel.declare_queue(
            self.dead_queue(group), durable=True, arguments=self._queue_arguments(group, dead=True)
        )
        await dead.bind(self.dead_exchange, routing_key=group)
        if not self.is_ordered(group):
            queue = await channel.declare_queue(
                self.queue(group), durable=True, arguments=self._queue_arguments(group)
            )
            for event_type in event_types:
                await queue.bind(events, routing_key=event_type)
            return [queue]
        partitions = await channel.declare_exchange(
            self.partition_exchange(group), aio_pika.ExchangeType.HEADERS, durable=True
        )
        for event_type in event_types:
            await partitions.bind(events, routing_key=event_type)
        queues = []
        for i in range(self.partitions):
            queue = await channel.declare_queue(
                self.partition_queue(group, i),
                durable=True,
                arguments={**self._queue_arguments(group), "x-single-active-consumer": True},
            )
            # Strings on both sides: the headers exchange compares values with their types.
            await queue.bind(partitions, arguments={"x-match": "all", PARTITION_HEADER: str(i)})
            queues.append(queue)
        return queues

    async def declare_all(
        self, channel: AbstractChannel, groups: dict[str, list[Consumer]]
    ) -> AbstractExchange:
        """Everything of every group: the relay declares it before its first publish, so an
        event is never dropped for want of a queue a worker has not declared yet."""
        for group, consumers in groups.items():
            await self.declare_group(channel, group, consumers)
        return await self.declare_exchanges(channel)
