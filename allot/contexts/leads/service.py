"""Lead use cases after intake: status changes along the pipeline, notes, edits, reading, and
keeping the assignee in step with routing and the customer id in step with merges.

Every function runs in the caller's transaction and never commits. Each change writes its
timeline row, one audit entry and its outbox event in that same transaction (L4).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, get_args

from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts import audit, routing
from allot.contexts.leads.recording import record_lead_change
from allot.kernel.clock import utcnow
from allot.kernel.errors import Conflict, ValidationFailed
from allot.kernel.events import publish
from allot.kernel.i18n import N_
from allot.kernel.pagination import PageParams

from . import events
from . import repository as repo
from .access import Viewer, visible_lead
from .intake import REQUIRED, TOO_LONG, activity, detail_errors, lead_snapshot, raise_if
from .models import Activity, Lead, LeadStatus
from .repository import LeadFilter
from .schemas import LostReason

# Why a lead was lost. Spam and duplicates were never real work: their routing items are
# cancelled (not counted as handled); any other loss completes the work.
LOST_REASONS: tuple[str, ...] = get_args(LostReason)
CANCELLING_REASONS = frozenset({"spam", "duplicate"})
MAX_NOTE = 5000
UNKNOWN_STATUS = N_("No such status")


class InvalidTransition(Conflict):
    code, title = "invalid-transition", "This status change is not allowed"


def _reference(lead: Lead) -> str:
    return f"lead:{lead.id}"


# -- reading ----------------------------------------------------------------------------------
async def get_lead(session: AsyncSession, lead_id: uuid.UUID, viewer: Viewer) -> Lead:
    return await visible_lead(session, lead_id, viewer)


async def list_leads(
    session: AsyncSession, filters: LeadFilter, page: PageParams, viewer: Viewer
) -> tuple[Sequence[Lead], str | None]:
    if not viewer.sees_all:
        if viewer.agent_id is None:
            return [], None
        filters = dataclasses.replace(filters, visible_to_agent=viewer.agent_id)
    return await repo.list_leads(session, filters, page)


async def timeline(
    session: AsyncSession, lead_id: uuid.UUID, page: PageParams, viewer: Viewer
) -> tuple[Sequence[Activity], str | None]:
    lead = await visible_lead(session, lead_id, viewer)
    return await repo.activities(session, lead.id, page)


async def allowed_targets(session: AsyncSession, lead: Lead) -> list[LeadStatus]:
    return await repo.allowed_targets(session, lead.status)


# -- status -----------------------------------------------------------------------------------
async def change_status(
    session: AsyncSession,
    lead_id: uuid.UUID,
    to_status: str,
    viewer: Viewer,
    *,
    lost_reason: str | None = None,
    prefix: str = "body",
) -> Lead:
    """Move a lead along an allowed transition. The first move is its first response (routing's
    SLA is met); a terminal status closes its routing item, freeing the assignee's capacity and
    handing them the next waiting item in this same transaction."""
    lead = await visible_lead(session, lead_id, viewer)
    target, allowed = await repo.transition_target(session, lead.status, to_status)
    if target is None:
        raise ValidationFailed.on(f"{prefix}.status", UNKNOWN_STATUS, "unknown_status")
    from_status = lead.status
    if not allowed:
        raise InvalidTransition(
            detail=f"A lead cannot move from {from_status!r} to {to_status!r}",
            extra={"from_status": from_status, "to_status": to_status},
        )
    lost = target.is_terminal and not target.is_won
    if lost_reason is not None and (not lost or lost_reason not in LOST_REASONS):
        message = "One of: " + ", ".join(LOST_REASONS) if lost else "Only for a lost lead"
        raise ValidationFailed.on(f"{prefix}.lost_reason", message)
    now = utcnow()
    before = lead_snapshot(lead)
    first_response = lead.first_responded_at is None
    values: dict[str, Any] = {"status": to_status, "updated_at": now}
    if first_response:
        values["first_responded_at"] = now
    if target.is_terminal:
        values.update(closed_at=now, lost_reason=lost_reason if lost else None)
    # L2: only from the status we checked; a concurrent change makes this a no-op and a 409.
    if not await repo.update_lead(session, lead.id, Lead.status == from_status, **values):
        raise InvalidTransition(detail="The lead's status changed meanwhile; reload it")
    if first_response:
        await routing.record_first_response(session, _reference(lead))
    if target.is_terminal:
        if lost_reason in CANCELLING_REASONS:
            await routing.cancel(session, _reference(lead))
        else:
            await routing.complete(session, _reference(lead))
    repo.add(
        session,
        activity(
            lead, "status_changed", now, from_status=from_status, to_status=to_status,
            reason=lost_reason,
        ),
    )  # fmt: skip
    await record_lead_change(
        session,
        lead,
        events.LEAD_STATUS_CHANGED,
        before=before,
        after=lead_snapshot(lead),
        facts={
            "from_status": from_status,
            "to_status": to_status,
            "terminal": target.is_terminal,
            "won": target.is_won,
            "lost_reason": lead.lost_reason,
            "first_response": first_response,
        },
    )
    return lead


# -- notes ------------------------------------------------------------------------------------
async def add_note(
    session: AsyncSession, lead_id: uuid.UUID, body: str, viewer: Viewer, *, prefix: str = "body"
) -> Activity:
    """A note on the timeline; the assignee's first note is their first response."""
    lead = await visible_lead(session, lead_id, viewer)
    text = body.strip()
    if not text:
        raise ValidationFailed.on(f"{prefix}.body", REQUIRED, "missing")
    if len(text) > MAX_NOTE:
        raise ValidationFailed.on(f"{prefix}.body", TOO_LONG, "too_long")
    now = utcnow()
    note = activity(lead, "note", now, body=text)
    repo.add(session, note)
    by_assignee = viewer.agent_id is not None and viewer.agent_id == lead.assignee_id
    if (
        by_assignee
        and lead.first_responded_at is None
        and await repo.update_lead(
            session, lead.id, Lead.first_responded_at.is_(None), first_responded_at=now
        )
    ):
        await routing.record_first_response(session, _reference(lead))
    await record_lead_change(
        session,
        lead,
        events.NOTE_ADDED,
        after={"note_id": note.id, "body": text},
        personal_fields=("body",),
        facts={"note_id": str(note.id), "excerpt": events.note_excerpt(text)},
    )
    return note


# -- edits ------------------------------------------------------------------------------------
async def update_lead(
    session: AsyncSession,
    lead_id: uuid.UUID,
    changes: dict[str, Any],
    viewer: Viewer,
    *,
    prefix: str = "body",
) -> Lead:
    """Change custom attributes and product fields (`amount_minor`, `currency`, `term_months`).
    Validated by the intake's rules; audited; publishes leads.lead.updated."""
    lead = await visible_lead(session, lead_id, viewer)
    currency = str(changes.get("currency") or lead.currency or "RUB").strip().upper()
    values = {
        "attributes": changes.get("attributes", lead.attributes),
        "amount_minor": changes.get("amount_minor", lead.amount_minor),
        "term_months": changes.get("term_months", lead.term_months),
    }
    raise_if(detail_errors(prefix, priority=lead.priority, currency=currency, **values))
    values["attributes"] = dict(values["attributes"])
    values["currency"] = currency if values["amount_minor"] is not None else None
    changed = sorted(k for k, v in values.items() if getattr(lead, k) != v)
    if not changed:
        return lead
    before = lead_snapshot(lead)
    await repo.update_lead(session, lead.id, **values, updated_at=utcnow())
    await record_lead_change(
        session,
        lead,
        events.LEAD_UPDATED,
        before=before,
        after=lead_snapshot(lead),
        personal_fields=("attributes",),
        facts={"changed": changed},
    )
    return lead


# -- reactions to other contexts --------------------------------------------------------------
async def follow_routing(
    session: AsyncSession,
    lead_id: uuid.UUID,
    *,
    agent_id: uuid.UUID,
    assigned: bool,
    at: datetime,
    reason: str | None,
) -> bool:
    """Mirror routing's owner of the lead's work item (L3). Idempotent: an assignment the lead
    already shows (e.g. set by the intake) or an event older than the last change is a no-op.
    Returns whether the lead changed."""
    lead = await repo.get_lead(session, lead_id)
    if lead is None:
        return False
    if lead.assignee_changed_at is not None and at < lead.assignee_changed_at:
        return False  # stale: a newer assignment was applied already
    previous = lead.assignee_id
    new = agent_id if assigned else None
    if assigned and previous == agent_id:
        return False
    if not assigned and previous != agent_id:
        return False  # it no longer has this assignee
    before = lead_snapshot(lead)
    if not await repo.update_lead(
        session,
        lead.id,
        Lead.assignee_id.is_not_distinct_from(previous),
        assignee_id=new,
        assignee_changed_at=at,
        updated_at=utcnow(),
    ):
        return False
    kind = "assigned" if assigned else "unassigned"
    repo.add(session, activity(lead, kind, utcnow(), agent_id=agent_id, reason=reason))
    await record_lead_change(
        session,
        lead,
        events.LEAD_ASSIGNED,
        before=before,
        after=lead_snapshot(lead),
        summary=f"{kind} ({reason})" if reason else kind,
        facts={
            "agent_id": str(new) if new else None,
            "previous_agent_id": str(previous) if previous else None,
            "reason": reason,
        },
    )
    return True


async def follow_customer_merge(
    session: AsyncSession, from_id: uuid.UUID, into_id: uuid.UUID
) -> int:
    """Customer `from_id` was merged into `into_id`: its leads now belong to `into_id`."""
    lead_ids = await repo.lead_ids_of_customer(session, from_id)
    if not lead_ids:
        return 0
    await repo.repoint_customer(session, from_id, into_id, utcnow())
    await audit.record_many(
        session,
        [
            audit.AuditEntryIn(
                action=events.LEAD_UPDATED,
                object_type=events.AGGREGATE,
                object_id=lead_id,
                before={"customer_id": from_id},
                after={"customer_id": into_id},
                summary="customer merged",
            )
            for lead_id in lead_ids
        ],
    )
    for lead_id in lead_ids:
        await publish(
            session,
            type=events.LEAD_UPDATED,
            aggregate_type=events.AGGREGATE,
            aggregate_id=lead_id,
            payload={
                "lead_id": str(lead_id),
                "customer_id": str(into_id),
                "previous_customer_id": str(from_id),
                "changed": ["customer_id"],
            },
            partition_key=into_id,
        )
    return len(lead_ids)


async def forget_customer_contacts(session: AsyncSession, customer_id: uuid.UUID) -> None:
    """The customer was erased: drop the copy of their name and contacts kept for search. Not a
    change of the lead itself (nothing else about it changes), so no audit entry or event."""
    await repo.clear_search_text(session, customer_id)
