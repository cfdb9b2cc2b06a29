"""In-process event dispatch: after commit, hand each outbox event to every subscribed consumer.

Guarantees (the broker relay of a later issue keeps the same ones):
- an event reaches consumers only after the transaction that wrote it committed;
- each consumer runs in its own unit of work (one per consumer and claimed batch; if one event
  fails, the batch is rolled back and applied event by event) and records `(consumer, event id)`
  in the inbox in that same transaction, so a retry or a second dispatcher never applies an
  effect twice;
- a failing consumer is retried with exponential backoff; after `max_attempts` the event is
  marked `dead` (kept, visible, replayable) and the others keep flowing;
- the payload a consumer sees was read back from the JSON column, exactly as a broker would
  deliver it.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel import context
from allot.kernel.clock import utcnow
from allot.kernel.db.engine import Database, insert_ignoring_conflicts
from allot.kernel.events.models import InboxEntry, OutboxEvent
from allot.kernel.events.outbox import (
    Event,
    add_commit_listener,
    dispatch_committed_events_locally,
    remove_commit_listener,
)
from allot.kernel.events.registry import Consumer, ConsumerRegistry, registry
from allot.kernel.logging import get_logger
from allot.kernel.loops import WakeableLoop

log = get_logger(__name__)

CLAIM_SECONDS = 60
GATHER_SECONDS = 0.05
# Events of this process's commits held in memory at most (outbox O3): an import of a million
# rows leaves the rest pending, to be claimed in their turn.
MAX_HANDED_EVENTS = 10_000
INBOX_TABLE: Any = InboxEntry.__table__
OUTBOX_TABLE: Any = OutboxEvent.__table__


def backoff_seconds(attempt: int, base: float = 1.0, cap: float = 300.0) -> float:
    """Exponential backoff with full jitter: attempt 1 -> up to 1 s, 2 -> 2 s, ... capped."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


async def mark_applied(session: AsyncSession, consumer: str, event_id: Any) -> bool:
    """Insert the inbox row; False when this consumer already applied this event."""
    values = {"consumer": consumer, "message_id": event_id, "received_at": utcnow()}
    result: Any = await session.execute(insert_ignoring_conflicts(session, INBOX_TABLE), values)
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
        gather_seconds: float = GATHER_SECONDS,
    ) -> None:
        self.database = database
        self.consumers = consumers
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.gather_seconds = gather_seconds
        self._loop = WakeableLoop("allot-event-dispatcher", self._round, idle_poll_seconds)
        # Events this process committed, leased to this dispatcher at birth (outbox O1).
        self._handed: list[Event] = []
        self.lease_seconds = float(CLAIM_SECONDS)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        add_commit_listener(self._loop.wake)
        dispatch_committed_events_locally(self.database.write_engine.sync_engine, self)
        self._loop.start()

    async def stop(self) -> None:
        dispatch_committed_events_locally(self.database.write_engine.sync_engine, None)
        remove_commit_listener(self._loop.wake)
        await self._loop.stop()
        if self._handed:
            # Their leases would keep them from the next dispatcher for CLAIM_SECONDS.
            handed, self._handed = self._handed, []
            try:
                await release_leases(self.database, [event.id for event in handed])
            except Exception:  # the leases run out by themselves
                log.warning("could not release the leases of handed events", exc_info=True)

    # -- events handed over in memory (outbox.dispatch_committed_events_locally) ------------
    def has_room(self) -> bool:
        return len(self._handed) < MAX_HANDED_EVENTS

    def wants_any(self, event: Event) -> bool:
        return any(consumer.wants(event) for consumer in self.consumers.consumers_for(event.type))

    def take(self, events: list[Event]) -> None:
        if events:
            self._handed.extend(events)
            self._loop.wake()

    # -- work --------------------------------------------------------------------------------
    async def _round(self) -> int:
        handled = await self.dispatch_batch()
        if 0 < handled < self.batch_size:
            # Under a stream of commits each round would take the few events of the last one,
            # paying a claim, a unit of work per consumer and a mark for each: a short pause
            # lets the next rounds take many at once. The first event after a quiet spell
            # still goes at once (an idle loop is woken by the commit).
            await asyncio.sleep(self.gather_seconds)
        return handled

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
        if self._handed:  # already leased to us: no claim needed
            events = self._handed[: self.batch_size]
            del self._handed[: self.batch_size]
            return events
        return await claim_due(self.database, self.batch_size)

    async def dispatch_batch(self) -> int:
        events = await self._claim()
        if not events:
            return 0
        failures: dict[Any, str] = {}
        lost_connection: set[Any] = set()  # failed because the database was away, not the handler
        for consumer, its_events in self._by_consumer(events):
            await self._deliver(consumer, its_events, failures, lost_connection)
        delivered = [event.id for event in events if event.id not in failures]
        if delivered:
            # Should the process die before this, the claim runs out and the events are
            # dispatched again: durable consumers skip them (inbox), the others are harmless to
            # repeat by definition.
            await mark_dispatched(self.database, delivered)
        for event in events:
            if event.id in failures:
                await self._reschedule(
                    event, failures[event.id], counted=event.id not in lost_connection
                )
        return len(events)

    def _by_consumer(self, events: list[Event]) -> list[tuple[Consumer, list[Event]]]:
        """Each consumer with the events of the batch it takes, in outbox order."""
        grouped: dict[str, tuple[Consumer, list[Event]]] = {}
        for event in events:
            for consumer in self.consumers.consumers_for(event.type):
                if consumer.wants(event):
                    grouped.setdefault(consumer.name, (consumer, []))[1].append(event)
        return list(grouped.values())

    async def _deliver(
        self,
        consumer: Consumer,
        events: list[Event],
        failures: dict[Any, str],
        lost_connection: set[Any],
    ) -> None:
        """All of a consumer's events in one unit of work; if any fails, that unit rolls back
        and they are applied one by one, so only the failing events are retried."""
        if len(events) > 1:
            try:
                await self.apply_many(consumer, events)
                return
            except Exception:
                log.warning("batch apply failed; applying one by one", consumer=consumer.name)
        for event in events:
            try:
                await self.apply(consumer, event)
            except Exception as exc:
                failures[event.id] = f"{consumer.name}: {type(exc).__name__}: {exc}"
                if await self.database.lost_connection(exc):
                    lost_connection.add(event.id)
                log.exception(
                    "event handler failed", consumer=consumer.name, event_id=str(event.id)
                )

    async def _reschedule(self, event: Event, failure: str, *, counted: bool = True) -> None:
        """Try the event again later; after `max_attempts` counted failures it is `dead`. A
        failure because the database was away is not counted: an outage kills no event."""
        async with self.database.transaction() as session:
            row = await session.get(OutboxEvent, event.id)
            assert row is not None
            if not counted:
                row.last_error = failure[:2000]
                row.claimed_until = None
                row.next_attempt_at = utcnow() + timedelta(seconds=backoff_seconds(1))
                return
            row.attempts += 1
            row.last_error = failure[:2000]
            row.claimed_until = None
            if row.attempts >= self.max_attempts:
                row.status = "dead"
            else:
                row.next_attempt_at = utcnow() + timedelta(seconds=backoff_seconds(row.attempts))

    async def apply(self, consumer: Consumer, event: Event) -> bool:
        """Apply one event for one consumer, at most once. Returns False if it was a repeat."""
        return await self.apply_many(consumer, [event]) == 1

    async def apply_many(self, consumer: Consumer, events: list[Event]) -> int:
        """Apply events for one consumer in one unit of work, each at most once (inbox).
        Returns how many were applied (repeats, and events the consumer does not take, are
        skipped)."""
        if consumer.takes is not None:  # (the check saves a call per event for the others)
            events = [event for event in events if consumer.wants(event)]
            if not events:
                return 0
        applied = 0
        # A non-durable consumer only reads (live refreshes): a read-only session, so it never
        # takes the writer (SQLite) nor opens a transaction when it reads nothing.
        unit = self.database.transaction() if consumer.durable else self.database.reader()
        async with unit as session:
            if consumer.durable:
                events = await _not_yet_applied(session, consumer.name, events)
            if consumer.prepare is not None and len(events) > 1:
                await consumer.prepare(session, events)
            for event in events:
                with context.bound(correlation_id=event.correlation_id):
                    await consumer.handler(session, event)
                    applied += 1
        return applied


async def _not_yet_applied(
    session: AsyncSession, consumer: str, events: list[Event]
) -> list[Event]:
    """The events this consumer has not applied yet, each now recorded in its inbox.

    Set-based: ONE `INSERT ... ON CONFLICT DO NOTHING RETURNING message_id` for the batch (one
    multi-row statement on both databases); the ids it returns are the fresh events. An event a
    second dispatcher or worker recorded meanwhile is simply not returned (on PostgreSQL the
    INSERT waits for that transaction and skips the row once it committed), so nothing is
    applied twice and the batch does not fail over it. (A SELECT of the seen ids and a plain
    INSERT of the rest cost two statements and a rolled-back unit on such a race.)"""
    if len(events) == 1:
        return events if await mark_applied(session, consumer, events[0].id) else []
    now = utcnow()
    # In id order: two units inserting overlapping batches wait for each other's rows in the
    # same order, so they cannot deadlock.
    ids = sorted({event.id for event in events})
    rows = [{"consumer": consumer, "message_id": i, "received_at": now} for i in ids]
    result = await session.execute(_record_in_inbox(session), rows)
    fresh = set(result.scalars())
    applied = []
    for event in events:
        if event.id in fresh:  # once, should a batch hold two copies of a message
            fresh.discard(event.id)
            applied.append(event)
    return applied


def _record_in_inbox(session: AsyncSession) -> Any:
    """The inbox INSERT returning the ids it wrote, built once per dialect (see
    `insert_ignoring_conflicts`)."""
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    statement = _record_in_inbox_cache.get(dialect)
    if statement is None:
        statement = insert_ignoring_conflicts(session, INBOX_TABLE).returning(
            INBOX_TABLE.c.message_id
        )
        _record_in_inbox_cache[dialect] = statement
    return statement


_record_in_inbox_cache: dict[str, Any] = {}


async def claim_due(
    database: Database,
    batch_size: int,
    *,
    dispatched: Sequence[Any] = (),
    only_if: ColumnElement[bool] | None = None,
    sole_claimer: bool = False,
) -> list[Event]:
    """Lease the next due outbox events to the caller (the Dispatcher, or the broker relay): one
    UPDATE ... RETURNING; on PostgreSQL rows another claimer holds are skipped (SKIP LOCKED).
    The lease runs out after CLAIM_SECONDS, so the events of a claimer that died are taken by
    the next. Returned in outbox order.

    Rows are chosen by due time (`next_attempt_at`, then id): the partial index on pending rows
    gives them in that order, so a claim costs the same with a backlog of 100,000 rows (a sort
    by `created_at` read every pending row: 60 ms at 60,000). An event never retried is due
    when it was written, so fresh events are taken in the order they were written.

    `dispatched`: ids of the caller's previous round to mark dispatched in the same transaction
    (the broker relay saves a transaction per round). `only_if`: a condition the claim also
    requires (the relay's "still the leader"); when it fails nothing is claimed, and the mark
    still commits. `sole_claimer`: the caller is the only one claiming (the relay holding the
    leader lock, which `only_if` checks), so a lease left by a claimer that died (a killed
    relay) is not waited out: its rows go at once (again: the inbox drops repeats)."""
    now = utcnow()
    unleased = or_(OutboxEvent.claimed_until.is_(None), OutboxEvent.claimed_until < now)
    due = (
        select(OutboxEvent.id)
        .where(
            OutboxEvent.status == "pending",
            OutboxEvent.next_attempt_at <= now,
            *(() if sole_claimer else (unleased,)),
        )
        .order_by(OutboxEvent.next_attempt_at, OutboxEvent.id)
        .limit(batch_size)
    )
    if not database.is_sqlite:
        due = due.with_for_update(skip_locked=True)  # another claimer's rows are skipped
    claim = (
        update(OUTBOX_TABLE)
        .where(OUTBOX_TABLE.c.id.in_(due.scalar_subquery()))
        .values(claimed_until=now + timedelta(seconds=CLAIM_SECONDS))
        .returning(*_event_columns())
    )
    if only_if is not None:
        claim = claim.where(only_if)
    async with database.transaction() as session:
        if dispatched:
            await _mark_dispatched(session, dispatched)
        rows = (await session.execute(claim)).all()
    # RETURNING comes in no particular order: consumers get the outbox order.
    return [Event.from_row(row) for row in sorted(rows, key=lambda r: (r.created_at, r.id))]


@functools.cache
def _event_columns() -> tuple[Any, ...]:
    """What a claim returns: the columns an `Event` is made of. Returning the whole row converted
    four more datetimes and the error text per event, about a fifth of a claim's cost."""
    c = OUTBOX_TABLE.c
    return (c.id, c.type, c.aggregatetype, c.aggregateid, c.payload, c.headers, c.created_at)


async def mark_dispatched(database: Database, event_ids: Sequence[Any]) -> None:
    """Mark claimed events dispatched: one UPDATE for the batch."""
    async with database.transaction() as session:
        await _mark_dispatched(session, event_ids)


async def _mark_dispatched(session: AsyncSession, event_ids: Sequence[Any]) -> None:
    await session.execute(
        update(OUTBOX_TABLE)
        .where(OUTBOX_TABLE.c.id.in_(list(event_ids)))
        .values(status="dispatched", dispatched_at=utcnow(), claimed_until=None)
    )


async def release_leases(database: Database, event_ids: Sequence[Any]) -> None:
    """Give leased, undelivered events back to whichever claimer comes next."""
    async with database.transaction() as session:
        await session.execute(
            update(OUTBOX_TABLE)
            .where(OUTBOX_TABLE.c.id.in_(list(event_ids)), OUTBOX_TABLE.c.status == "pending")
            .values(claimed_until=None)
        )


async def pending_count(session: AsyncSession) -> int:
    stmt = select(func.count()).select_from(OutboxEvent).where(OutboxEvent.status == "pending")
    return int((await session.execute(stmt)).scalar_one())
