"""Dead letters: the events a consumer gave up on, kept to be read, replayed or purged.

Broker mode: the worker publishes a failed message (with a confirm, before acking the original)
to `<ns>.dead`, routing key = group, which routes it to `<ns>.<group>.dead`. Its headers say why:
`x-error`, `x-attempts`, `x-consumer`, `x-original-routing-key`, `x-original-queue`,
`x-first-failure-at`, `x-last-failure-at`. A quorum queue's own delivery limit dead-letters there
too (RabbitMQ's `x-death` header instead of ours).

Reading never loses a message: `list`/`show` take messages without acking and give each back
(`nack(requeue=True)`; a closed channel would give them back as well). `replay` publishes a copy
to the group's queue (an ordered group: its partition exchange, same `allot-partition`), waits for
the confirm and only then acks the dead letter: a crash in between leaves both, and the inbox
makes the repeat harmless.

Single-process mode (no broker): the same operations over outbox rows with status `dead`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel.clock import utcnow
from allot.kernel.events.broker.codec import CONTENT_TYPE, PERSISTENT
from allot.kernel.events.broker.topology import PARTITION_HEADER, Topology
from allot.kernel.events.models import OutboxEvent

FAILURE_HEADERS = (
    "x-error",
    "x-attempts",
    "x-consumer",
    "x-original-routing-key",
    "x-original-queue",
    "x-first-failure-at",
    "x-last-failure-at",
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why a message was dead-lettered, as its headers carry it."""

    consumer: str
    error: str
    attempts: int
    routing_key: str
    queue: str
    first_failure: datetime
    last_failure: datetime

    def headers(self) -> dict[str, Any]:
        return {
            "x-error": self.error[:4000],
            "x-attempts": self.attempts,
            "x-consumer": self.consumer,
            "x-original-routing-key": self.routing_key,
            "x-original-queue": self.queue,
            "x-first-failure-at": self.first_failure.isoformat(),
            "x-last-failure-at": self.last_failure.isoformat(),
        }


async def send_to_dead_letters(
    channel: AbstractChannel,
    topology: Topology,
    group: str,
    message: AbstractIncomingMessage,
    why: DeadLetter,
) -> None:
    """Publish a copy of `message` to the group's dead-letter queue; returns once confirmed."""
    exchange = await channel.get_exchange(topology.dead_exchange, ensure=False)
    copy = aio_pika.Message(
        message.body,
        headers={**dict(message.headers or {}), **why.headers()},
        content_type=message.content_type or CONTENT_TYPE,
        delivery_mode=PERSISTENT,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        timestamp=utcnow(),
    )
    await exchange.publish(copy, routing_key=group)


# -- reading and replaying the dead-letter queues ----------------------------------------------
@dataclass(frozen=True, slots=True)
class DeadMessage:
    group: str
    event_id: str
    event_type: str
    consumer: str
    attempts: str
    error: str
    first_failure: str
    last_failure: str
    routing_key: str
    headers: dict[str, Any]
    body: Any

    @classmethod
    def of(cls, group: str, message: AbstractIncomingMessage) -> DeadMessage:
        headers = {k: _plain(v) for k, v in dict(message.headers or {}).items()}
        try:
            body: Any = json.loads(message.body)
        except ValueError:
            body = message.body.decode(errors="replace")
        reason = headers.get("x-first-death-reason")
        return cls(
            group=group,
            event_id=str(message.message_id or ""),
            event_type=str(message.type or headers.get("x-original-routing-key") or ""),
            consumer=str(headers.get("x-consumer") or ""),
            attempts=str(headers.get("x-attempts") or headers.get("x-delivery-count") or ""),
            error=str(headers.get("x-error") or (f"broker: {reason}" if reason else "")),
            first_failure=str(headers.get("x-first-failure-at") or ""),
            last_failure=str(headers.get("x-last-failure-at") or ""),
            routing_key=str(headers.get("x-original-routing-key") or message.routing_key or ""),
            headers=headers,
            body=body,
        )


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


Visit = Callable[[str, AbstractChannel, AbstractIncomingMessage], Awaitable[bool]]


class DeadLetterQueues:
    """Administration of `<ns>.<group>.dead` (the `allot events dlq` commands)."""

    def __init__(self, connection: AbstractConnection, topology: Topology) -> None:
        self.connection = connection
        self.topology = topology

    async def _scan(self, groups: list[str], visit: Visit, limit: int | None = None) -> int:
        """Take each group's dead letters (at most those there when the scan began), call
        `visit`; a message `visit` returns False for is given back to the queue."""
        seen = 0
        for group in groups:
            channel = await self.connection.channel(publisher_confirms=True)
            try:
                queue = await self._existing(channel, group)
                if queue is None:
                    continue
                held: list[AbstractIncomingMessage] = []
                count = queue.declaration_result.message_count or 0
                try:
                    for _ in range(count):
                        if limit is not None and seen >= limit:
                            break
                        message = await queue.get(no_ack=False, fail=False)
                        if message is None:
                            break
                        seen += 1
                        if not await visit(group, channel, message):
                            held.append(message)
                finally:
                    for message in held:
                        await message.nack(requeue=True)
            finally:
                with contextlib.suppress(Exception):
                    await channel.close()
        return seen

    async def _existing(self, channel: AbstractChannel, group: str) -> AbstractQueue | None:
        try:
            return await channel.declare_queue(self.topology.dead_queue(group), passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return None  # never declared: no dead letters (the channel is closed by RabbitMQ)

    async def peek(self, groups: list[str], limit: int) -> list[DeadMessage]:
        found: list[DeadMessage] = []

        async def collect(
            group: str, _channel: AbstractChannel, m: AbstractIncomingMessage
        ) -> bool:
            found.append(DeadMessage.of(group, m))
            return False

        await self._scan(groups, collect, limit)
        return found

    async def show(self, groups: list[str], event_id: str) -> list[DeadMessage]:
        found: list[DeadMessage] = []

        async def match(group: str, _channel: AbstractChannel, m: AbstractIncomingMessage) -> bool:
            if m.message_id == event_id:
                found.append(DeadMessage.of(group, m))
            return False

        await self._scan(groups, match)
        return found

    async def replay(self, groups: list[str], event_id: str | None) -> int:
        """Republish the dead letters of `event_id` (None: all) to their group's queue; each is
        removed from the dead-letter queue only after the broker confirmed the copy."""
        replayed = 0

        async def send_back(
            group: str, channel: AbstractChannel, m: AbstractIncomingMessage
        ) -> bool:
            nonlocal replayed
            if event_id is not None and m.message_id != event_id:
                return False
            await self._republish(channel, group, m)
            await m.ack()
            replayed += 1
            return True

        await self._scan(groups, send_back)
        return replayed

    async def _republish(
        self, channel: AbstractChannel, group: str, message: AbstractIncomingMessage
    ) -> None:
        headers = {k: v for k, v in dict(message.headers or {}).items() if k not in FAILURE_HEADERS}
        copy = aio_pika.Message(
            message.body,
            headers=headers,
            content_type=message.content_type or CONTENT_TYPE,
            delivery_mode=PERSISTENT,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            type=message.type,
        )
        if self.topology.is_ordered(group) and PARTITION_HEADER in headers:
            exchange = await channel.get_exchange(
                self.topology.partition_exchange(group), ensure=False
            )
            await exchange.publish(copy, routing_key="")
        else:  # straight into the group's queue: other groups do not see it again
            await channel.default_exchange.publish(copy, routing_key=self.topology.queue(group))

    async def purge(self, groups: list[str]) -> int:
        purged = 0
        for group in groups:
            channel = await self.connection.channel()
            try:
                queue = await self._existing(channel, group)
                if queue is not None:
                    result = await queue.purge()
                    purged += int(result.message_count or 0)
            finally:
                with contextlib.suppress(Exception):
                    await channel.close()
        return purged


# -- single-process mode: dead outbox rows -------------------------------------------------------
def _of_group(group: str | None) -> Any:
    conditions = [OutboxEvent.status == "dead"]
    if group:
        # The Dispatcher records the failing consumer first in last_error ("audit.x: Error: ...").
        conditions.append(OutboxEvent.last_error.like(f"{group}.%"))
    return conditions


async def dead_rows(session: AsyncSession, group: str | None, limit: int) -> list[OutboxEvent]:
    stmt = select(OutboxEvent).where(*_of_group(group)).order_by(OutboxEvent.created_at)
    return list((await session.execute(stmt.limit(limit))).scalars())


async def replay_rows(session: AsyncSession, event_id: Any | None, group: str | None) -> int:
    """Dead rows back to pending with their attempts reset: the dispatcher takes them again."""
    stmt = update(OutboxEvent).where(*_of_group(group))
    if event_id is not None:
        stmt = stmt.where(OutboxEvent.id == event_id)
    stmt = stmt.values(status="pending", attempts=0, next_attempt_at=utcnow(), claimed_until=None)
    result: Any = await session.execute(stmt)
    return int(result.rowcount or 0)


async def purge_rows(session: AsyncSession, group: str | None) -> int:
    result: Any = await session.execute(delete(OutboxEvent).where(*_of_group(group)))
    return int(result.rowcount or 0)
