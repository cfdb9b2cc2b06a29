"""Writing events: always into the outbox, inside the business transaction, never straight out."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel import context
from allot.kernel.clock import utcnow
from allot.kernel.db.engine import on_commit
from allot.kernel.events.models import OutboxEvent
from allot.kernel.ids import new_id

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
    def from_row(cls, row: OutboxEvent) -> Event:
        return cls(
            id=row.id,
            type=row.type,
            aggregate_type=row.aggregatetype,
            aggregate_id=row.aggregateid,
            payload=dict(row.payload),
            headers=dict(row.headers or {}),
            created_at=row.created_at,
        )


async def publish(
    session: AsyncSession,
    *,
    type: str,
    aggregate_type: str,
    aggregate_id: str | uuid.UUID,
    payload: dict[str, Any],
    schema_version: int = 1,
) -> uuid.UUID:
    """Record an event in the outbox as part of the caller's transaction.

    `payload` must be JSON-serialisable facts (ids as strings); `occurred_at`, `schema_version`
    and `correlation_id` are added here so every event carries them.
    """
    event_id = new_id()
    now = utcnow()
    correlation_id = context.current_correlation_id()
    actor = context.current_actor()
    body = {
        **payload,
        "occurred_at": now.isoformat(),
        "schema_version": schema_version,
        "correlation_id": correlation_id,
    }
    headers = {
        "correlation_id": correlation_id,
        "request_id": context.current_request_id(),
        "actor_kind": actor.kind,
        "actor_id": str(actor.id) if actor.id else None,
    }
    session.add(
        OutboxEvent(
            id=event_id,
            aggregatetype=aggregate_type,
            aggregateid=str(aggregate_id),
            type=type,
            payload=body,
            headers=headers,
            created_at=now,
            next_attempt_at=now,
        )
    )
    on_commit(session, _notify_listeners)
    return event_id
