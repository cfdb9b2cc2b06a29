"""All SQL of the audit context. Deliberately no update or delete, apart from `rewrite`, which
pseudonymisation uses (and the database triggers confine to the rewritable columns)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel.db.deferred import defer_insert
from allot.kernel.pagination import PageParams, paginate

from .models import AuditEntry

AUDIT_TABLE: Any = AuditEntry.__table__

PSEUDONYMISE_BATCH = 500


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What the trail is searched by; None means "any"."""

    object_type: str | None = None
    object_id: str | None = None
    actor_id: uuid.UUID | None = None
    actor_label: str | None = None
    action: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


def add(session: AsyncSession, row: dict[str, Any]) -> None:
    # Deferred, not executed: the entries of a unit of work go in with one INSERT at commit.
    defer_insert(session, AUDIT_TABLE, row)


async def insert_many(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(AuditEntry), rows)


async def search(
    session: AsyncSession, filters: AuditFilter, page: PageParams
) -> tuple[Sequence[AuditEntry], str | None]:
    statement = select(AuditEntry)
    if filters.object_type is not None:
        statement = statement.where(AuditEntry.object_type == filters.object_type)
    if filters.object_id is not None:
        statement = statement.where(AuditEntry.object_id == filters.object_id)
    if filters.actor_id is not None:
        statement = statement.where(AuditEntry.actor_id == filters.actor_id)
    if filters.actor_label is not None:
        statement = statement.where(AuditEntry.actor_label == filters.actor_label)
    if filters.action is not None:
        statement = statement.where(AuditEntry.action == filters.action)
    if filters.since is not None:
        statement = statement.where(AuditEntry.occurred_at >= filters.since)
    if filters.until is not None:
        statement = statement.where(AuditEntry.occurred_at < filters.until)
    return await paginate(session, statement, AuditEntry.id, page)


async def get(session: AsyncSession, entry_id: uuid.UUID) -> AuditEntry | None:
    return await session.get(AuditEntry, entry_id)


async def entries_of_subject(
    session: AsyncSession, object_type: str, object_id: str, *, actor_id: uuid.UUID | None
) -> AsyncIterator[Sequence[Row[Any]]]:
    """Entries about the subject or made by them, in id order, a batch at a time (as plain rows,
    so nothing lands in the session's identity map)."""
    about = and_(AuditEntry.object_type == object_type, AuditEntry.object_id == object_id)
    condition = about if actor_id is None else or_(about, AuditEntry.actor_id == actor_id)
    columns = (
        AuditEntry.id, AuditEntry.object_type, AuditEntry.object_id, AuditEntry.actor_id,
        AuditEntry.actor_label, AuditEntry.before, AuditEntry.after,
        AuditEntry.personal_fields, AuditEntry.summary,
    )  # fmt: skip
    after: uuid.UUID | None = None
    while True:
        statement = select(*columns).where(condition)
        if after is not None:
            statement = statement.where(AuditEntry.id > after)
        statement = statement.order_by(AuditEntry.id).limit(PSEUDONYMISE_BATCH)
        batch = (await session.execute(statement)).all()
        if not batch:
            return
        yield batch
        if len(batch) < PSEUDONYMISE_BATCH:
            return
        after = batch[-1].id


async def rewrite(session: AsyncSession, updates: list[dict[str, Any]]) -> None:
    """Bulk update by primary key of the pseudonymisable columns only."""
    if updates:
        await session.execute(update(AuditEntry), updates)
