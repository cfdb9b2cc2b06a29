"""Reading identity's side effects back: audit entries and outbox events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from allot.contexts.audit.models import AuditEntry
from allot.kernel.db import Database
from allot.kernel.events import OutboxEvent

HTML = {"Accept": "text/html", "Accept-Language": "en"}


async def audit_entries(database: Database, object_id: Any) -> list[AuditEntry]:
    async with database.reader() as session:
        rows = await session.execute(
            select(AuditEntry).where(AuditEntry.object_id == str(object_id)).order_by(AuditEntry.id)
        )
        return list(rows.scalars())


async def events_of(database: Database, event_type: str) -> list[OutboxEvent]:
    async with database.reader() as session:
        rows = await session.execute(select(OutboxEvent).where(OutboxEvent.type == event_type))
        return list(rows.scalars())
