"""Live updates of the routing pages: routing events, after commit, become "refresh" messages.

Topics (see allot.kernel.web.live): `agent:<agent id>` for the agent's inbox (its offers, items,
status or load changed) with event `inbox`, and `board` for the managers' board with event
`board`. The data is the routing event type, for information only: pages re-fetch their fragment
with the reader's own session and language, so one message serves every reader and a message
cannot leak what its reader may not see.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts.routing import events
from allot.contexts.routing.models import Offer, WorkItem
from allot.kernel.events import Event, subscribe
from allot.kernel.web.live import Hub, install_live, process_hub

BOARD_TOPIC = "board"
INBOX_EVENT = "inbox"
BOARD_EVENT = "board"

# Set by install(): consumers receive only (session, event), not the app.
_hub: Hub | None = None


def agent_topic(agent_id: uuid.UUID | str) -> str:
    return f"agent:{agent_id}"


def install(app: Any) -> None:
    global _hub
    _hub = install_live(app)


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


async def agents_concerned(session: AsyncSession, event: Event) -> set[uuid.UUID]:
    """The agents whose inbox this event changes (at most one small query)."""
    payload = event.payload
    if event.type == events.ITEM_OFFERED:
        offer_ids = [i for i in map(_uuid, payload.get("offer_ids") or []) if i is not None]
        if not offer_ids:
            return set()
        rows = await session.execute(select(Offer.agent_id).where(Offer.id.in_(offer_ids)))
        return set(rows.scalars())
    if event.type in (events.ITEM_COMPLETED, events.ITEM_CANCELLED):
        item_id = _uuid(payload.get("item_id"))
        owner = (
            await session.scalar(select(WorkItem.owner_agent_id).where(WorkItem.id == item_id))
            if item_id
            else None
        )
        return {owner} if owner else set()
    agent_id = _uuid(payload.get("agent_id"))
    return {agent_id} if agent_id else set()


@subscribe("routing.live_updates", *events.ALL, durable=False)
async def publish_live_updates(session: AsyncSession, event: Event) -> None:
    """Tell open inboxes and boards that something they show changed."""
    hub = process_hub() or _hub  # a worker has a Redis hub (kernel/runtime.py), an app its own
    if hub is None:  # no web app and no Redis in this process: nobody to tell
        return
    for agent_id in sorted(await agents_concerned(session, event)):
        hub.publish(agent_topic(agent_id), INBOX_EVENT, event.type)
    hub.publish(BOARD_TOPIC, BOARD_EVENT, event.type)
