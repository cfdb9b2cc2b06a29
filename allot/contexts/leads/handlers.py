"""Reactions to other contexts' events: routing's assignments, customers' merges and erasures.

Both are idempotent twice over: the inbox drops a repeated delivery, and the effect itself is a
no-op when the lead already shows it (an intake that set the same assignee, a merge applied)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts import customers, routing
from allot.kernel.events import Event, subscribe

from . import repository as repo
from . import service

LEAD_REFERENCE_PREFIX = "lead:"


def _lead_id(reference: str) -> uuid.UUID | None:
    if not reference.startswith(LEAD_REFERENCE_PREFIX):
        return None
    try:
        return uuid.UUID(reference[len(LEAD_REFERENCE_PREFIX) :])
    except ValueError:
        return None


_PREPARED = "leads.prepared_leads"


async def _load_leads(session: AsyncSession, events: list[Event]) -> None:
    """The leads of a batch of routing events in one query (the handler then finds them in the
    session's identity map instead of reading each). The session holds its objects weakly: the
    list is kept in `session.info` for the unit of work, or they would be gone before the
    handler asks (and each `session.get` would read its lead again)."""
    ids = {_lead_id(str(e.payload.get("reference") or "")) for e in events} - {None}
    if ids:
        session.info[_PREPARED] = await repo.leads_by_ids(session, ids)  # type: ignore[arg-type]


def _not_told_at_submit(event: Event) -> bool:
    """An assignment made by the submit itself came back in its result: the intake wrote it on
    the lead in the same transaction, so following it would be a no-op (and cost a unit of work,
    an inbox row and a read of the lead per lead taken in)."""
    return not (event.type == routing.events.ITEM_ASSIGNED and event.payload.get("at_submit"))


@subscribe(
    "leads.on_routing_assignment",
    routing.events.ITEM_ASSIGNED,
    routing.events.ITEM_UNASSIGNED,
    prepare=_load_leads,
    takes=_not_told_at_submit,
)
async def on_routing_assignment(session: AsyncSession, event: Event) -> None:
    payload = event.payload
    lead_id = _lead_id(str(payload.get("reference") or ""))
    if payload.get("kind") != "lead" or lead_id is None or not payload.get("agent_id"):
        return
    assigned = event.type == routing.events.ITEM_ASSIGNED
    occurred = payload.get("occurred_at")
    at = datetime.fromisoformat(occurred) if occurred else event.created_at
    assert at is not None
    await service.follow_routing(
        session,
        lead_id,
        agent_id=uuid.UUID(str(payload["agent_id"])),
        assigned=assigned,
        at=at,
        reason=payload.get("via") if assigned else payload.get("reason"),
    )


@subscribe("leads.on_customer_merged", customers.events.CUSTOMER_MERGED)
async def on_customer_merged(session: AsyncSession, event: Event) -> None:
    await service.follow_customer_merge(
        session,
        uuid.UUID(str(event.payload["from_id"])),
        uuid.UUID(str(event.payload["into_id"])),
    )


@subscribe("leads.on_customer_erased", customers.events.CUSTOMER_ERASED)
async def on_customer_erased(session: AsyncSession, event: Event) -> None:
    await service.forget_customer_contacts(session, uuid.UUID(str(event.payload["customer_id"])))
