"""In-process event dispatch: after commit, hand each outbox event to every subscribed consumer.

Guarantees (the broker relay of a later issue keeps the same ones):
- an event reaches consumers only after the transaction that wrote it committed;
- each consumer runs in its own unit of work and records `(consumer, event id)` in the inbox in
  that same transaction, so a retry or a second dispatcher never applies an effect twice;
- a failing consumer is retried with exponential backoff; after `max_attempts` the event is
  marked `dead` (kept, visible, replayable) and the others keep flowing;
- the payload a consumer sees was read back from the JSON column, exactly as a broker would
  deliver it.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel import context
from allot.kernel.clock import utcnow
from allot.kernel.db.engine import Database
from allot.kernel.events.models import InboxEntry, OutboxEvent
from allot.kernel.events.outbox import Event, add_commit_listener, remove_commit_listener
from allot.kernel.events.registry import Consumer, ConsumerRegistry, registry
from allot.kernel.logging import get_logger
from allot.kernel.loops import WakeableLoop

log = get_logger(__name__)

CLAIM_SECONDS = 60


def backoff_seconds(attempt: int, base: float = 1.0, cap: float = 300.0) -> float:
    """Exponential backoff with full jitter: attempt 1 -> up to 1 s, 2 -> 2 s, ... capped."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


async def mark_applied(session: AsyncSession, consumer: str, event_id: Any) -> bool:
    """Insert the inbox row; False when this consumer already applied this event."""
    dialect = session.bind.dialect.name if session.bind else "sqlite"
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = (
        insert(InboxEntry)
        .values(consumer=consumer, message_id=event_id, received_at=utcnow())
        .on_conflict_do_nothing()
    )
    result: Any = await session.execute(stmt)
    return bool(result.rowcount == 1)


class Dispatcher:
    def __init__(
        self,
        database: Database,
        consumers: ConsumerRegistry = registry,
        *,
        batch_size: int = 100,
        max_attempts: int = 10,
        idle_poll_seconds: float = 1.0,
    ) -> None:
        self.database = database
        self.consumers = consumers
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self._loop = WakeableLoop("allot-event-dispatcher", self.dispatch_batch, idle_poll_seconds)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        add_commit_listener(self._loop.wake)
        self._loop.start()

    async def stop(self) -> None:
        remove_commit_listener(self._loop.wake)
        await self._loop.stop()

    # -- work --------------------------------------------------------------------------------
    async def drain(self, max_rounds: int = 1000) -> int:
        """Dispatch until nothing is due; returns how many events were handled (tests, CLI)."""
        total = 0
        for _ in range(max_rounds):
            handled = await self.dispatch_batch()
            if handled == 0:
                return total
            total += handled
        raise RuntimeError("Outbox did not drain: handlers keep producing events")

    async def _claim(self) -> list[Event]:
        now = utcnow()
        async with self.database.transaction() as session:
            due = (
                select(OutboxEvent.id)
                .where(
                    OutboxEvent.status == "pending",
                    OutboxEvent.next_attempt_at <= now,
                    or_(OutboxEvent.claimed_until.is_(None), OutboxEvent.claimed_until < now),
                )
                .order_by(OutboxEvent.created_at, OutboxEvent.id)
                .limit(self.batch_size)
            )
            if not self.database.is_sqlite:
                due = due.with_for_update(skip_locked=True)
            ids = list((await session.execute(due)).scalars())
            if not ids:
                return []
            await session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id.in_(ids))
                .values(claimed_until=now + timedelta(seconds=CLAIM_SECONDS))
            )
            rows = (
                await session.execute(
                    select(OutboxEvent)
                    .where(OutboxEvent.id.in_(ids))
                    .order_by(OutboxEvent.created_at, OutboxEvent.id)
                )
            ).scalars()
            return [Event.from_row(row) for row in rows]

    async def dispatch_batch(self) -> int:
        events = await self._claim()
        for event in events:
            await self._dispatch(event)
        return len(events)

    async def _dispatch(self, event: Event) -> None:
        failure: str | None = None
        for consumer in self.consumers.consumers_for(event.type):
            try:
                await self.apply(consumer, event)
            except Exception as exc:
                failure = f"{consumer.name}: {type(exc).__name__}: {exc}"
                log.exception(
                    "event handler failed", consumer=consumer.name, event_id=str(event.id)
                )
        async with self.database.transaction() as session:
            if failure is None:
                await session.execute(
                    update(OutboxEvent)
                    .where(OutboxEvent.id == event.id)
                    .values(status="dispatched", dispatched_at=utcnow(), claimed_until=None)
                )
                return
            row = await session.get(OutboxEvent, event.id)
            assert row is not None
            row.attempts += 1
            row.last_error = failure[:2000]
            row.claimed_until = None
            if row.attempts >= self.max_attempts:
                row.status = "dead"
            else:
                row.next_attempt_at = utcnow() + timedelta(seconds=backoff_seconds(row.attempts))

    async def apply(self, consumer: Consumer, event: Event) -> bool:
        """Apply one event for one consumer, at most once. Returns False if it was a repeat."""
        with context.bound(correlation_id=event.correlation_id):
            async with self.database.transaction() as session:
                if consumer.durable and not await mark_applied(session, consumer.name, event.id):
                    return False
                await consumer.handler(session, event)
                return True


async def pending_count(session: AsyncSession) -> int:
    stmt = select(func.count()).select_from(OutboxEvent).where(OutboxEvent.status == "pending")
    return int((await session.execute(stmt)).scalar_one())
