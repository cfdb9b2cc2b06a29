"""Reads for the rule editor's pages (rule_views.py): the newest items to try a rule set on, and
an item by id for its "why" page. Part of routing's repository, kept apart because only those
pages use it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts.routing.models import WorkItem

RECENT_ITEMS = 10


@dataclass(frozen=True, slots=True)
class RecentItem:
    id: uuid.UUID
    reference: str
    kind: str
    state: str
    created_at: datetime
    attributes: dict[str, Any]


async def recent_items(
    session: AsyncSession, kind: str = "lead", limit: int = RECENT_ITEMS
) -> list[RecentItem]:
    """The newest work items of a kind, newest first. Ids are UUIDv7 (time-ordered), so the
    primary key's index gives the order and the read stops after `limit` rows."""
    rows = await session.execute(
        select(
            WorkItem.id,
            WorkItem.reference,
            WorkItem.kind,
            WorkItem.state,
            WorkItem.created_at,
            WorkItem.attributes,
        )
        .where(WorkItem.kind == kind)
        .order_by(WorkItem.id.desc())
        .limit(limit)
    )
    return [
        RecentItem(row.id, row.reference, row.kind, row.state, row.created_at, row.attributes or {})
        for row in rows
    ]


async def item_by_id(session: AsyncSession, item_id: uuid.UUID) -> WorkItem | None:
    return await session.get(WorkItem, item_id)
