"""The steps every routing flow shares (placing, offers, the backlog pass, closing): one reading
of the clock, a flow's result, an item's event, and showing on a loaded item what a conditional
UPDATE wrote, and writing a submitted item. Kept apart from engine.py so the modules of the flows
import them as public names."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from allot.contexts.routing.models import WorkItem
from allot.contexts.routing.repository import ITEMS
from allot.kernel.clock import utcnow
from allot.kernel.config import get_settings
from allot.kernel.db.engine import insert_ignoring_conflicts
from allot.kernel.errors import Conflict
from allot.kernel.events import publish


@dataclass(slots=True)
class RouteResult:
    state: str  # "assigned" | "offered" | "waiting" | <terminal state>
    agent_id: uuid.UUID | None = None
    offer_ids: list[uuid.UUID] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Moment:
    """One reading of the clock, with the business day and month quotas are counted in."""

    now: datetime
    today: date
    month: str

    @classmethod
    def read(cls) -> Moment:
        now = utcnow()
        local = now.astimezone(ZoneInfo(get_settings().business_timezone))
        return cls(now=now, today=local.date(), month=local.strftime("%Y-%m"))


def item_payload(item: WorkItem | Any, **extra: Any) -> dict[str, Any]:
    return {
        "item_id": str(item.id),
        "reference": item.reference,
        "kind": item.kind,
        "queue_id": str(item.queue_id) if item.queue_id else None,
        **extra,
    }


async def publish_item(session: AsyncSession, type_: str, item: Any, **extra: Any) -> None:
    await publish(
        session,
        type=type_,
        aggregate_type="routing.item",
        aggregate_id=item.id,
        payload=item_payload(item, **extra),
    )


def mirror_item(item: WorkItem, **values: Any) -> None:
    """Show on the loaded item what a conditional UPDATE just wrote, without marking it changed:
    assigning the attributes would make the session write them all again at its next flush."""
    for name, value in values.items():
        set_committed_value(item, name, value)


async def insert_submitted(session: AsyncSession, item: WorkItem, **written: Any) -> None:
    """INSERT a submitted item's row (the item's values, `written` over them: its state when
    it is written already assigned). The reference is unique: a duplicate is refused by the
    unique index, not by a prior SELECT, and is a Conflict."""
    values = {column.key: getattr(item, column.key) for column in ITEMS.columns}
    values.update(written)
    inserted: Any = await session.execute(insert_ignoring_conflicts(session, ITEMS), values)
    if inserted.rowcount != 1:
        raise Conflict(detail=f"Work item {item.reference!r} was already submitted")
    if written:
        mirror_item(item, **written)
