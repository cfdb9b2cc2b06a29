"""The timeline follows the leads context: each of its events about a customer's lead becomes a
timeline entry (the inbox makes every event count once, however often it is delivered)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel.events import Event, subscribe
from allot.kernel.i18n import N_
from allot.kernel.logging import get_logger

from . import repository
from .timeline import add_timeline_entry

log = get_logger(__name__)

LEAD_CREATED = "leads.lead.created"
LEAD_STATUS_CHANGED = "leads.lead.status_changed"
LEAD_ASSIGNED = "leads.lead.assigned"
NOTE_ADDED = "leads.note.added"

# Event type -> (timeline kind, title msgid, payload keys kept as the title's placeholders).
ENTRIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    LEAD_CREATED: (
        "lead.created",
        N_("New lead from %(source)s"),
        ("source", "status", "assignee_id", "amount_minor", "currency"),
    ),
    LEAD_STATUS_CHANGED: (
        "lead.status_changed",
        N_("Lead status changed: %(from_status)s → %(to_status)s"),
        ("from_status", "to_status"),
    ),
    LEAD_ASSIGNED: ("lead.assigned", N_("Lead assigned to an agent"), ("agent_id",)),
    NOTE_ADDED: ("lead.note_added", N_("Note on a lead: %(excerpt)s"), ("note_id", "excerpt")),
}
# A lead assigned as it was taken in: one entry says both (its `assignee_id` in the data).
CREATED_AND_ASSIGNED_TITLE = N_("New lead from %(source)s, assigned to an agent")


def _not_said_by_the_creation(event: Event) -> bool:
    """The assignment made as a lead was taken in is told by the lead's "created" entry (its
    `assignee_id`); a second entry of the same moment would only repeat it."""
    return not (event.type == LEAD_ASSIGNED and event.payload.get("at_intake"))


def _occurred_at(payload: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(payload["occurred_at"]))
    except (KeyError, ValueError):
        return None


def _customer_id(event: Event) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(event.payload["customer_id"]))
    except (KeyError, ValueError):
        return None  # a lead without a customer has no timeline to join


_LIVE_CARDS = "customers.live_cards"


async def _load_cards(session: AsyncSession, events: list[Event]) -> None:
    """Which cards of a batch of lead events are live (not merged away), in one query: the
    handler then skips `resolve_merged`'s query for each of them."""
    ids = {_customer_id(event) for event in events} - {None}
    cards = await repository.get_cards(session, ids)  # type: ignore[arg-type]
    session.info[_LIVE_CARDS] = {i for i, card in cards.items() if card.merged_into_id is None}


@subscribe(
    "customers.timeline_from_leads", *ENTRIES, prepare=_load_cards, takes=_not_said_by_the_creation
)
async def lead_event_to_timeline(session: AsyncSession, event: Event) -> None:
    payload = event.payload
    customer_id = _customer_id(event)
    if customer_id is None:
        return
    live: set[uuid.UUID] = session.info.get(_LIVE_CARDS, set())
    target = (
        customer_id
        if customer_id in live
        else (await repository.resolve_merged(session, customer_id))
    )
    if target is None:
        log.warning("lead event for an unknown customer", event_id=str(event.id))
        return
    kind, title, keys = ENTRIES[event.type]
    if event.type == LEAD_CREATED and payload.get("assignee_id"):
        title = CREATED_AND_ASSIGNED_TITLE
    lead_id = str(payload.get("lead_id") or "")
    data = {"lead_id": lead_id, **{key: payload.get(key) for key in keys}}
    await add_timeline_entry(
        session,
        target,
        known_current=True,
        kind=kind,
        title=title,
        reference=f"lead:{lead_id}" if lead_id else None,
        data=data,
        occurred_at=_occurred_at(payload),
    )
