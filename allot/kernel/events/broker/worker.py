"""The broker worker: consumes its groups' queues and applies each event with the same handlers
and the same inbox as the in-process Dispatcher (`Dispatcher.apply_many` / `apply`).

Guarantees:
- effect once: a message is acked only after the unit of work that applied it (and wrote the
  inbox row) committed. A worker killed before the ack gets the message redelivered (to itself
  or another worker), and the inbox skips every consumer that already applied it; a duplicate
  publish (the relay retrying a batch) is skipped the same way;
- batches: what is buffered (up to `broker_batch_size`, growing while messages keep coming, at
  most GATHER_MAX_SECONDS) is applied per consumer in one unit of work, as the Dispatcher does;
  if it fails, event by event, so only the failing events are retried. An unordered queue has
  `broker_concurrency` batches in flight; acks are grouped (`_Acks`);
- retries: a failing (event, consumer) is tried again after an exponential backoff with full
  jitter (`broker_retry_base_seconds` doubled per attempt), up to `broker_max_attempts` tries
  (a failure because the database was unreachable is not a try: the message waits for it, so
  an outage dead-letters nothing);
  then it is published (with a confirm) to `<ns>.dead` with the error, the attempts, the
  consumer, the original routing key and the first/last failure time, and acked: the queue keeps
  flowing. In an unordered queue the retries run beside the next batches (the message holds a
  prefetch slot meanwhile); in a partition queue of an ordered group they run inline, so the
  events of a key are applied strictly in order;
- the correlation id of the request that caused an event is bound into the log context while
  it is handled (`context.bound`), so consumer logs carry it.

`stop()` takes no new batch, lets the batches in flight finish and ack, abandons waiting retries
(their messages are redelivered) and closes the connection: unacked messages go back to their
queue, in order (see `stop` for why the consumers are not cancelled first).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aiormq.abc import DeliveredMessage

from allot.kernel import context
from allot.kernel.clock import utcnow
from allot.kernel.config import Settings
from allot.kernel.db.engine import Database
from allot.kernel.events.broker import codec
from allot.kernel.events.broker.connection import (
    BrokerAvailability,
    StopSignal,
    connect_until_stopped,
    connection_name,
    reconnect_delay,
)
from allot.kernel.events.broker.dead_letters import DeadLetter, send_to_dead_letters
from allot.kernel.events.broker.topology import Topology, consumer_groups
from allot.kernel.events.dispatcher import Dispatcher, backoff_seconds
from allot.kernel.events.outbox import Event
from allot.kernel.events.registry import Consumer, ConsumerRegistry, registry
from allot.kernel.logging import get_logger

log = get_logger(__name__)

# After the first buffered message, how long to wait for more before applying a batch.
GATHER_SECONDS = 0.002
GATHER_MAX_SECONDS = 0.02
RETRY_CAP_SECONDS = 300.0

# What a queue delivers: aiormq's own message (the fast path, see `_QueueRunner._take_over`),
# or aio-pika's wrapper of it until the take-over. Both have `body`, `delivery_tag`,
# `routing_key` and `channel` (the aiormq channel it came on).
Message = DeliveredMessage | AbstractIncomingMessage


class _Abandoned(Exception):
    """Stopping while a message waits for a retry: it stays unacked and is redelivered."""


@dataclass(slots=True)
class _Delivery:
    message: Message
    event: Event
    pending: set[str]  # consumers that have not finished with it (applied or dead-lettered)
    first_failure: datetime | None = None
    acked: bool = field(default=False)
    epoch: int = 0  # of the channel it came on (see _Acks)


# The deliveries finished by the batch being handled (acked together at its end); None outside.
_batch_finished: ContextVar[list[_Delivery] | None] = ContextVar("batch_finished", default=None)


class _Acks:
    """Acks of one channel with as few frames as possible, holding none back for long.

    A finished message is acked with the others up to it in one frame (`multiple`) once every
    older delivery of the channel is finished too. An older one still in another lane's batch
    is done within milliseconds: the acks wait for it. An older one waiting for a retry can take
    minutes: the finished ones behind it are acked one by one at once, so the prefetch window
    keeps moving. Delivery tags restart with a new channel (after a reconnection): a new epoch."""

    def __init__(self) -> None:
        self.epoch = 0
        self.reset()

    def reset(self) -> None:
        self.epoch += 1
        self.unacked: dict[int, Message] = {}  # in delivery order
        self.done: set[int] = set()
        self.retrying: set[int] = set()
        self.last_tag = 0

    def delivered(self, message: Message) -> None:
        tag = message.delivery_tag or 0
        if tag <= self.last_tag:
            self.reset()
        self.last_tag = tag
        self.unacked[tag] = message

    def to_send(self, tags: list[int]) -> list[tuple[Message, bool, int]]:
        """(message, multiple, how many it acks) frames to send now that `tags` finished."""
        self.done.update(tag for tag in tags if tag in self.unacked)
        self.retrying.difference_update(tags)
        frames: list[tuple[Message, bool, int]] = []
        last: Message | None = None
        count = 0
        for tag in list(self.unacked):
            if tag not in self.done:
                break
            last = self.unacked.pop(tag)
            self.done.discard(tag)
            count += 1
        if last is not None:
            frames.append((last, True, count))
        if self.unacked and next(iter(self.unacked)) in self.retrying:
            for tag in sorted(self.done):
                frames.append((self.unacked.pop(tag), False, 1))
            self.done.clear()
        return frames


class BrokerWorker:
    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        groups: Iterable[str] | None = None,
        consumers: ConsumerRegistry = registry,
    ) -> None:
        self.consumers = consumers
        self._chosen = None if groups is None else list(groups)
        self.groups = self._resolve_groups()
        self.database = database
        self.url = settings.broker_url
        self.topology = Topology.from_settings(settings)
        self.dispatcher = Dispatcher(database, consumers)
        self.prefetch = max(1, settings.broker_prefetch)
        self.batch_size = max(1, settings.broker_batch_size)
        self.concurrency = max(1, settings.broker_concurrency)
        self.max_attempts = max(1, settings.broker_max_attempts)
        self.retry_base_seconds = settings.broker_retry_base_seconds
        self.connected = asyncio.Event()  # set once every queue is consumed
        self.acked = 0  # messages finished (applied or dead-lettered) since start
        self.dead_lettered = 0
        self.setup_failures = 0
        self.batches = 0  # batches handled (acked / batches = the batch size reached)
        self._stop = StopSignal()
        self._task: asyncio.Task[None] | None = None
        self._connection: AbstractRobustConnection | None = None
        self._runners: list[_QueueRunner] = []
        # One warning when the broker goes away, one line when it is back, reconnect attempts
        # with backoff and jitter in between (aio-pika then restores the consumers).
        self._availability = BrokerAvailability(
            connection_name("allot-worker", self.topology.namespace), self.url
        )

    def _resolve_groups(self) -> dict[str, list[Consumer]]:
        known = consumer_groups(self.consumers)
        chosen = list(known) if self._chosen is None else self._chosen
        unknown = sorted(set(chosen) - set(known))
        if unknown:
            raise ValueError(f"no consumers in group(s) {', '.join(unknown)}")
        return {group: known[group] for group in chosen}

    async def start(self) -> None:
        """Connect (retrying in the background while the broker is down) and consume."""
        self.groups = self._resolve_groups()  # consumers registered since __init__ count too
        self._task = asyncio.create_task(self._run(), name="allot-broker-worker")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
            self._task = None
        # No basic.cancel first: it would hand a partition to the standby consumer while this
        # one still holds unacked messages, which then come back behind newer ones. Closing the
        # channel returns them and moves the partition in one step, in order.
        for runner in self._runners:
            runner.wake()
        for runner in self._runners:
            await runner.finish()
        self._runners = []
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def _run(self) -> None:
        """Connect and consume; a failure to set up (the broker going away meanwhile, a queue
        declared elsewhere with other arguments) is logged and tried again with backoff."""
        failures = 0
        while not self._stop.is_set:
            connection = await connect_until_stopped(self._availability, self._stop)
            if connection is None:
                return
            self._connection = connection
            outages = self._availability.outages
            try:
                await self._consume(connection)
                return
            except Exception as exc:
                failures += 1
                self.setup_failures += 1
                delay = reconnect_delay(failures)
                # The broker going away meanwhile has its own warning; anything else (a queue
                # refused) is an error an operator must see.
                lost = self._availability.down or self._availability.outages != outages
                report = log.info if lost or not connection.connected.is_set() else log.error
                report(
                    "worker could not start consuming; retrying",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=round(delay, 2),
                )
                for runner in self._runners:
                    runner.wake()
                self._runners = []
                self._connection = None
                with contextlib.suppress(Exception):
                    await connection.close()
                await self._stop.sleep(delay)

    async def _consume(self, connection: AbstractRobustConnection) -> None:
        declaring = await connection.channel()
        for group, consumers in self.groups.items():
            ordered = self.topology.is_ordered(group)
            for queue in await self.topology.declare_group(declaring, group, consumers):
                # A channel per queue: its prefetch, and acks with `multiple` that cover only
                # this queue's messages.
                channel = await connection.channel(publisher_confirms=True)
                await channel.set_qos(prefetch_count=self.prefetch)
                # Declared again (idempotent) on its own channel so that a robust reconnection
                # restores it with the same arguments.
                consumed = await channel.declare_queue(
                    queue.name, durable=True, arguments=queue.arguments
                )
                runner = _QueueRunner(self, group, consumers, consumed, channel, ordered=ordered)
                self._runners.append(runner)
                await runner.start()
        await declaring.close()
        self.connected.set()
        log.info("worker consuming", groups=sorted(self.groups), queues=len(self._runners))

    # -- shared by the queue runners ---------------------------------------------------------
    async def dead_letter(
        self,
        channel: AbstractChannel,
        queue: str,
        group: str,
        delivery: _Delivery,
        consumer: str,
        error: str,
        attempts: int,
    ) -> None:
        now = utcnow()
        await send_to_dead_letters(
            channel,
            self.topology,
            group,
            _incoming(delivery.message),
            DeadLetter(
                consumer=consumer,
                error=error,
                attempts=attempts,
                routing_key=delivery.message.routing_key or delivery.event.type,
                queue=queue,
                first_failure=delivery.first_failure or now,
                last_failure=now,
            ),
        )
        self.dead_lettered += 1
        log.warning(
            "event dead-lettered",
            consumer=consumer,
            event_id=str(delivery.event.id),
            attempts=attempts,
            error=error[:500],
        )


class _QueueRunner:
    """One consumed queue: a buffer filled by the consumer callback and one loop applying it."""

    def __init__(
        self,
        worker: BrokerWorker,
        group: str,
        consumers: list[Consumer],
        queue: AbstractQueue,
        channel: AbstractChannel,
        *,
        ordered: bool,
    ) -> None:
        self.worker = worker
        self.channel = channel
        self.acks = _Acks()
        self.group = group
        self.consumers = consumers
        self.queue = queue
        self.ordered = ordered
        self.buffer: asyncio.Queue[Message | None] = asyncio.Queue()
        self.retries: set[asyncio.Task[None]] = set()
        # Batches in flight at once: an unordered queue applies the next batch while the last
        # one commits; a partition queue one at a time (its order).
        self.lanes = 1 if ordered else worker.concurrency
        self._loops: list[asyncio.Task[None]] = []
        self._consumer_tag = ""
        self._takers: dict[str, frozenset[str]] = {}  # event type -> consumers here taking it

    async def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._run(), name=f"allot-worker-{self.queue.name}-{lane}")
            for lane in range(self.lanes)
        ]
        # Consumed through aio-pika, so that a robust reconnection restores the consumer
        # (channel, qos, declaration, basic.consume) as it does for any other ...
        self._consumer_tag = await self.queue.consume(self._on_message)
        await self._take_over()
        # ... and taken over again once aio-pika has restored it on a new channel.
        cast(AbstractRobustChannel, self.channel).reopen_callbacks.add(self._take_over)

    async def _take_over(self, *_: Any) -> None:
        """Have aiormq hand deliveries of our consumer straight to `_on_message`.

        aio-pika wraps each delivery in an `IncomingMessage` (≈20 attribute sets) and a second
        task: 13% of a worker's CPU per event, measured. The worker needs only the body, the
        delivery tag and the channel, which aiormq's `DeliveredMessage` has. If the take-over
        does not happen (a consumer aio-pika restored by another path) deliveries still come,
        through the wrapper: `_on_message` takes either."""
        with contextlib.suppress(Exception):  # the channel closing meanwhile: restored later
            underlay = cast(aiormq.Channel, await self.channel.get_underlay_channel())
            if self._consumer_tag in underlay.consumers:
                underlay.consumers[self._consumer_tag] = self._on_message

    async def _on_message(self, message: Message) -> None:
        self.acks.delivered(message)
        self.buffer.put_nowait(message)

    def wake(self) -> None:
        for _ in range(self.lanes):
            self.buffer.put_nowait(None)

    async def finish(self) -> None:
        if self._loops:
            await asyncio.gather(*self._loops)
        if self.retries:
            await asyncio.gather(*self.retries, return_exceptions=True)

    # -- loop --------------------------------------------------------------------------------
    async def _run(self) -> None:
        stop = self.worker._stop
        while not stop.is_set:
            try:
                batch = await self._next_batch()
                if not batch:
                    continue
                await self._handle(batch)
            except _Abandoned:
                return
            except Exception:  # the database or the channel: unacked messages come back
                log.exception("worker batch failed", queue=self.queue.name)
                await stop.sleep(1.0)

    async def _next_batch(self) -> list[Message]:
        first = await self.buffer.get()
        if first is None:
            return []
        batch = [first]
        self._take_buffered(batch)
        # Messages come in one by one as the connection reads them: while they keep coming
        # (each pause of GATHER_SECONDS brings more), the batch grows up to the batch size or
        # GATHER_MAX_SECONDS. A lone message waits one pause only.
        deadline = time.monotonic() + GATHER_MAX_SECONDS
        while len(batch) < self.worker.batch_size and not self.worker._stop.is_set:
            before = len(batch)
            await asyncio.sleep(GATHER_SECONDS)
            self._take_buffered(batch)
            if len(batch) == before or time.monotonic() >= deadline:
                break
        return self._live(batch)

    def _take_buffered(self, batch: list[Message]) -> None:
        while len(batch) < self.worker.batch_size:
            try:
                message = self.buffer.get_nowait()
            except asyncio.QueueEmpty:
                return
            if message is None:  # stopping: leave the sentinel for the loop
                self.buffer.put_nowait(None)
                return
            batch.append(message)

    @staticmethod
    def _live(batch: list[Message]) -> list[Message]:
        """Messages of a channel lost since delivery are back in their queue (and maybe with
        another worker already): handling them here could overtake that worker."""
        return [m for m in batch if _channel_open(m)]

    async def _handle(self, batch: list[Message]) -> None:
        self.worker.batches += 1
        finished: list[_Delivery] = []
        token = _batch_finished.set(finished)
        try:
            await self._apply_batch(batch)
        finally:
            _batch_finished.reset(token)
        await self._send_acks(finished)

    async def _apply_batch(self, batch: list[Message]) -> None:
        deliveries: list[_Delivery] = []
        for message in batch:
            try:
                event = codec.decode(message.body)
            except Exception as exc:
                await self._dead_letter_undecodable(message, exc)
                continue
            names = self._takers.get(event.type)
            if names is None:
                names = self._takers[event.type] = frozenset(
                    c.name for c in self.consumers if event.type in c.event_types
                )
            delivery = _Delivery(message, event, set(names), epoch=self.acks.epoch)
            if not names:  # a binding left by an older version: nobody here takes it
                await self._ack(delivery)
                continue
            deliveries.append(delivery)
        for consumer in self.consumers:
            its = [d for d in deliveries if d.event.type in consumer.event_types]
            if its:
                await self._deliver(consumer, its)

    async def _deliver(self, consumer: Consumer, deliveries: list[_Delivery]) -> None:
        if len(deliveries) > 1:
            try:
                await self.worker.dispatcher.apply_many(consumer, [d.event for d in deliveries])
            except Exception:
                log.warning("batch apply failed; applying one by one", consumer=consumer.name)
            else:
                for delivery in deliveries:
                    await self._finished(delivery, consumer.name)
                return
        for delivery in deliveries:
            try:
                await self.worker.dispatcher.apply(consumer, delivery.event)
            except Exception as exc:
                error = _describe(exc)
                delivery.first_failure = delivery.first_failure or utcnow()
                with context.bound(correlation_id=delivery.event.correlation_id):
                    log.warning(
                        "event handler failed",
                        consumer=consumer.name,
                        event_id=str(delivery.event.id),
                        attempt=1,
                        error=error[:500],
                    )
                # A lost database is not the message's fault: that try is not counted (the retry
                # loop waits for the database), so an outage dead-letters nothing.
                counted = 0 if await self.worker.database.lost_connection(exc) else 1
                retry = self._retry(consumer, delivery, counted, error)
                if self.ordered:
                    await retry  # the key's next events wait: order holds
                else:
                    self.acks.retrying.add(delivery.message.delivery_tag or 0)
                    task = asyncio.create_task(retry)
                    self.retries.add(task)
                    task.add_done_callback(self.retries.discard)
            else:
                await self._finished(delivery, consumer.name)

    async def _retry(self, consumer: Consumer, delivery: _Delivery, tries: int, error: str) -> None:
        worker = self.worker
        if not self.ordered:
            _batch_finished.set(None)  # its own task: acks when it is done, not with the batch
        with context.bound(correlation_id=delivery.event.correlation_id):
            while tries < worker.max_attempts:
                delay = backoff_seconds(
                    max(tries, 1), base=worker.retry_base_seconds, cap=RETRY_CAP_SECONDS
                )
                if await worker._stop.sleep(delay):
                    if self.ordered:
                        raise _Abandoned
                    return
                tries += 1
                try:
                    await worker.dispatcher.apply(consumer, delivery.event)
                except Exception as exc:
                    error = _describe(exc)
                    lost = await worker.database.lost_connection(exc)
                    if lost:
                        tries -= 1  # the database was away: not a try of the handler
                    log.warning(
                        "event handler failed",
                        consumer=consumer.name,
                        event_id=str(delivery.event.id),
                        attempt=tries,
                        database_unreachable=lost,
                        error=error[:500],
                    )
                    continue
                await self._finished(delivery, consumer.name)
                return
            await worker.dead_letter(
                self.channel, self.queue.name, self.group, delivery, consumer.name, error, tries
            )
            await self._finished(delivery, consumer.name)

    async def _finished(self, delivery: _Delivery, consumer: str) -> None:
        delivery.pending.discard(consumer)
        if not delivery.pending:
            await self._ack(delivery)

    async def _ack(self, delivery: _Delivery) -> None:
        if delivery.acked:
            return
        delivery.acked = True
        finished = _batch_finished.get()
        if finished is not None:
            finished.append(delivery)
        else:
            await self._send_acks([delivery])

    async def _send_acks(self, deliveries: list[_Delivery]) -> None:
        current = [d for d in deliveries if d.epoch == self.acks.epoch]
        # Of a channel lost since: already back in the queue; the inbox skips them next time.
        frames = self.acks.to_send([d.message.delivery_tag or 0 for d in current])
        for message, multiple, count in frames:
            try:
                await message.channel.basic_ack(message.delivery_tag or 0, multiple=multiple)
            except Exception:  # channel lost since delivery: redelivered, the inbox skips them
                log.info("ack lost with its channel", messages=count)
                continue
            self.worker.acked += count

    async def _dead_letter_undecodable(self, message: Message, exc: Exception) -> None:
        placeholder = Event(
            id=_zero_id(),
            type=message.routing_key or "",
            aggregate_type="",
            aggregate_id="",
            payload={},
        )
        delivery = _Delivery(
            message, placeholder, set(), first_failure=utcnow(), epoch=self.acks.epoch
        )
        await self.worker.dead_letter(
            self.channel, self.queue.name, self.group, delivery, "(decode)", _describe(exc), 1
        )
        await self._ack(delivery)


def _incoming(message: Message) -> AbstractIncomingMessage:
    """aio-pika's view of a message (dead-lettering copies its properties; a rare path)."""
    if isinstance(message, DeliveredMessage):
        return aio_pika.IncomingMessage(message, no_ack=False)
    return message


def _channel_open(message: Message) -> bool:
    try:
        return not message.channel.is_closed
    except Exception:  # aio-pika raises once the channel is gone
        return False


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _zero_id() -> uuid.UUID:
    return uuid.UUID(int=0)
