"""Writing events: always into the outbox, inside the business transaction, never straight out."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel import context
from allot.kernel.clock import utcnow
from allot.kernel.db.deferred import defer_insert, defer_insert_many
from allot.kernel.db.engine import on_commit
from allot.kernel.events.models import OutboxEvent
from allot.kernel.ids import new_id

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


def _headers(caller: context.ContextSnapshot | None) -> dict[str, Any]:
    with caller.applied() if caller is not None else contextlib.nullcontext():
        actor = context.current_actor()
        return {
            "correlation_id": context.current_correlation_id(),
            "request_id": context.current_request_id(),
            "actor_kind": actor.kind,
            "actor_id": str(actor.id) if actor.id else None,
        }


def _outbox_rows(events: Iterable[NewEvent]) -> list[dict[str, Any]]:
    """Outbox rows for events written now: `occurred_at`, `schema_version` and `correlation_id`
    join every payload, the request's and actor's ids every header."""
    now = utcnow()
    occurred_at = now.isoformat()
    headers_of: dict[tuple[context.ContextSnapshot | None, Any], dict[str, Any]] = {}
    callers: dict[context.ContextSnapshot | None, dict[str, Any]] = {}
    rows = []
    for event in events:
        key = (event.caller, event.partition_key)
        headers = headers_of.get(key)
        if headers is None:  # one document per caller and key: shared rows are encoded once
            base = callers.get(event.caller)
            if base is None:  # the caller's context applied once, not once per key
                base = callers[event.caller] = _headers(event.caller)
            headers = headers_of[key] = dict(base)
            if event.partition_key is not None:
                headers["partition_key"] = str(event.partition_key)
        rows.append(
            {
                "id": new_id(),
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
            }
        )
    return rows


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
    (row,) = _outbox_rows([new])
    # Deferred: the rows of a unit of work go in with one INSERT at commit (see db.deferred).
    defer_insert(session, OUTBOX_TABLE, row)
    on_commit(session, _notify_listeners)
    event_id: uuid.UUID = row["id"]
    return event_id


async def publish_many(session: AsyncSession, events: Iterable[NewEvent]) -> list[uuid.UUID]:
    """`publish` for many events at once (group commits, imports): the same outbox rows, deferred
    like `publish`'s, so every event of a unit of work goes in with one executemany INSERT at
    commit, whichever context published it. Returns the event ids."""
    rows = _outbox_rows(events)
    if rows:
        defer_insert_many(session, OUTBOX_TABLE, rows)
        on_commit(session, _notify_listeners)
    ids: list[uuid.UUID] = [row["id"] for row in rows]
    return ids
