"""Writing events: always into the outbox, inside the business transaction, never straight out."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import Table
from sqlalchemy import event as orm_events
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from allot.kernel import context
from allot.kernel.clock import utcnow
from allot.kernel.db.bulk_insert import json_dumps
from allot.kernel.db.deferred import defer_insert, defer_insert_many
from allot.kernel.db.engine import AllotSession, on_commit, sync_session_of
from allot.kernel.events.models import OutboxEvent
from allot.kernel.ids import new_ids

OUTBOX_TABLE = cast(Table, OutboxEvent.__table__)

# Called (synchronously, in the event loop) after a transaction that wrote events commits.
_commit_listeners: list[Callable[[], None]] = []


def add_commit_listener(listener: Callable[[], None]) -> None:
    _commit_listeners.append(listener)


def remove_commit_listener(listener: Callable[[], None]) -> None:
    if listener in _commit_listeners:
        _commit_listeners.remove(listener)


def _notify_listeners() -> None:
    for listener in list(_commit_listeners):
        listener()


@dataclass(frozen=True, slots=True)
class Event:
    """An event as consumers see it: the same shape in-process and through a broker."""

    id: uuid.UUID
    type: str
    aggregate_type: str
    aggregate_id: str
    payload: dict[str, Any]
    headers: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None

    @property
    def correlation_id(self) -> str | None:
        value = self.headers.get("correlation_id")
        return str(value) if value else None

    @classmethod
    def from_row(cls, row: OutboxEvent | Any) -> Event:
        """From the ORM row or a Core row of the same columns (a claim's RETURNING)."""
        return cls(
            id=row.id,
            type=row.type,
            aggregate_type=row.aggregatetype,
            aggregate_id=row.aggregateid,
            payload=dict(row.payload),
            headers=dict(row.headers or {}),
            created_at=row.created_at,
        )


@dataclass(frozen=True, slots=True)
class NewEvent:
    """One event for `publish_many`; the same fields `publish` takes as keywords."""

    type: str
    aggregate_type: str
    aggregate_id: str | uuid.UUID
    payload: dict[str, Any]
    schema_version: int = 1
    # Whose event it is when one unit of work writes for several requests (group commit);
    # None: the current context's.
    caller: context.ContextSnapshot | None = None
    # What per-key order is kept for in broker mode (`headers["partition_key"]`); None: the
    # aggregate. Leads give their customer's id: everything about one client in order.
    partition_key: str | uuid.UUID | None = None


class LocalDispatcher(Protocol):
    """An in-process dispatcher that takes the events its own process commits (the
    `Dispatcher`): see `dispatch_committed_events_locally`."""

    lease_seconds: float

    def has_room(self) -> bool: ...

    def wants_any(self, event: Event) -> bool: ...

    def take(self, events: list[Event]) -> None: ...


# By write engine (a sync `Engine`): a process may hold several databases (tests do).
_local_dispatchers: dict[Any, LocalDispatcher] = {}
_HANDOFF_KEY = "allot.outbox_handoff"


def dispatch_committed_events_locally(engine: Any, dispatcher: LocalDispatcher | None) -> None:
    """From now on (None: no longer), events written through `engine` go to `dispatcher` in
    memory once their transaction commits, instead of waiting for it to claim them:

    - O1 such a row is born leased to this process (`claimed_until`, as a claim would set it),
      so no other claimer takes it meanwhile; should the process die before the dispatcher
      marks it, the lease runs out and any dispatcher claims it (the inbox drops repeats);
    - O2 an event no consumer of that dispatcher takes is born `dispatched`: claiming it only
      to mark it was all the dispatcher would do. Only with a dispatcher in the process: in
      broker mode every event is relayed;
    - O3 when the dispatcher holds too many events already (an import), rows are written
      pending as before and claimed in their turn: memory stays bounded.

    What a consumer receives is the payload as its JSON column holds it (encoded and decoded
    again), as from a claim or a broker."""
    if dispatcher is None:
        _local_dispatchers.pop(engine, None)
    else:
        _local_dispatchers[engine] = dispatcher


class _Handoff:
    """The events a transaction hands to the local dispatcher once it commits."""

    __slots__ = ("dispatcher", "events", "info")

    def __init__(self, dispatcher: LocalDispatcher, info: dict[str, Any]) -> None:
        self.dispatcher = dispatcher
        self.events: list[Event] = []
        self.info = info

    def __call__(self) -> None:  # after commit
        self.info.pop(_HANDOFF_KEY, None)
        self.dispatcher.take(self.events)


def _local_handoff(session: AsyncSession | Session) -> _Handoff | None:
    sync = sync_session_of(session)
    handoff: _Handoff | None = sync.info.get(_HANDOFF_KEY)
    if handoff is None:
        dispatcher = _local_dispatchers.get(sync.bind) if _local_dispatchers else None
        if dispatcher is None:
            return None
        handoff = sync.info[_HANDOFF_KEY] = _Handoff(dispatcher, sync.info)
        on_commit(sync, handoff)
    return handoff


@orm_events.listens_for(AllotSession, "after_rollback")
def _drop_handoff(session: Session) -> None:
    session.info.pop(_HANDOFF_KEY, None)


def _headers(caller: context.ContextSnapshot | None) -> dict[str, Any]:
    with caller.applied() if caller is not None else contextlib.nullcontext():
        actor = context.current_actor()
        return {
            "correlation_id": context.current_correlation_id(),
            "request_id": context.current_request_id(),
            "actor_kind": actor.kind,
            "actor_id": str(actor.id) if actor.id else None,
        }


def _outbox_rows(
    events: Iterable[NewEvent], handoff: _Handoff | None = None
) -> list[dict[str, Any]]:
    """Outbox rows for events written now: `occurred_at`, `schema_version` and `correlation_id`
    join every payload, the request's and actor's ids every header. With a `handoff`, rows are
    leased or born dispatched as `dispatch_committed_events_locally` says."""
    now = utcnow()
    dispatcher = (
        handoff.dispatcher if handoff is not None and handoff.dispatcher.has_room() else None
    )
    lease = now + timedelta(seconds=dispatcher.lease_seconds) if dispatcher is not None else None
    occurred_at = now.isoformat()
    headers_of: dict[tuple[context.ContextSnapshot | None, Any], dict[str, Any]] = {}
    callers: dict[context.ContextSnapshot | None, dict[str, Any]] = {}
    rows = []
    events = list(events)
    for event, event_id in zip(events, new_ids(len(events)), strict=True):
        key = (event.caller, event.partition_key)
        headers = headers_of.get(key)
        if headers is None:  # one document per caller and key: shared rows are encoded once
            base = callers.get(event.caller)
            if base is None:  # the caller's context applied once, not once per key
                base = callers[event.caller] = _headers(event.caller)
            headers = headers_of[key] = dict(base)
            if event.partition_key is not None:
                headers["partition_key"] = str(event.partition_key)
        row = {
            "id": event_id,
            "aggregatetype": event.aggregate_type,
            "aggregateid": str(event.aggregate_id),
            "type": event.type,
            "payload": {
                **event.payload,
                "occurred_at": occurred_at,
                "schema_version": event.schema_version,
                "correlation_id": headers["correlation_id"],
            },
            "headers": headers,
            "created_at": now,
            "next_attempt_at": now,
            "status": "pending",
            "attempts": 0,
            "claimed_until": None,
            "dispatched_at": None,
        }
        rows.append(row)
        if dispatcher is not None and handoff is not None:
            _hand_off(row, dispatcher, handoff, lease)
    return rows


def _hand_off(
    row: dict[str, Any], dispatcher: LocalDispatcher, handoff: _Handoff, lease: Any
) -> None:
    """O1/O2 for one row (see `dispatch_committed_events_locally`)."""
    event = Event(
        row["id"],
        row["type"],
        row["aggregatetype"],
        row["aggregateid"],
        row["payload"],
        row["headers"],
        row["created_at"],
    )
    # Consumers' `takes` are pure functions of the event's JSON facts: asked before the
    # payload is copied, which only the events handed over need.
    if not dispatcher.wants_any(event):
        row["status"] = "dispatched"
        row["dispatched_at"] = row["created_at"]
        return
    row["claimed_until"] = lease
    # As the JSON column will hold it: what a claim would read back (headers are strings).
    payload = json.loads(json_dumps(row["payload"]))
    handoff.events.append(replace(event, payload=payload, headers=dict(row["headers"])))


async def publish(
    session: AsyncSession,
    *,
    type: str,
    aggregate_type: str,
    aggregate_id: str | uuid.UUID,
    payload: dict[str, Any],
    schema_version: int = 1,
    partition_key: str | uuid.UUID | None = None,
) -> uuid.UUID:
    """Record an event in the outbox as part of the caller's transaction.

    `payload` must be JSON-serialisable facts (ids as strings); `occurred_at`, `schema_version`
    and `correlation_id` are added here so every event carries them. `partition_key`: the key
    whose events consumers of an ordered group apply in order (docs/event-bus.md, "Per-key
    order"); default the aggregate id.
    """
    new = NewEvent(
        type, aggregate_type, aggregate_id, payload, schema_version, partition_key=partition_key
    )
    (row,) = _outbox_rows([new], _local_handoff(session))
    # Deferred: the rows of a unit of work go in with one INSERT at commit (see db.deferred).
    defer_insert(session, OUTBOX_TABLE, row)
    on_commit(session, _notify_listeners)
    event_id: uuid.UUID = row["id"]
    return event_id


async def publish_many(session: AsyncSession, events: Iterable[NewEvent]) -> list[uuid.UUID]:
    """`publish` for many events at once (group commits, imports): the same outbox rows, deferred
    like `publish`'s, so every event of a unit of work goes in with one executemany INSERT at
    commit, whichever context published it. Returns the event ids."""
    rows = _outbox_rows(events, _local_handoff(session))
    if rows:
        defer_insert_many(session, OUTBOX_TABLE, rows)
        on_commit(session, _notify_listeners)
    ids: list[uuid.UUID] = [row["id"] for row in rows]
    return ids
