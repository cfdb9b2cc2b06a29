"""One change of a lead leaves an audit entry and an outbox event in the caller's transaction
(invariant L4 in models.py); every lead change goes through here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts import audit
from allot.contexts.leads import events
from allot.contexts.leads.models import Lead
from allot.kernel.events import publish


async def record_lead_change(
    session: AsyncSession,
    lead: Lead,
    event_type: str,
    *,
    after: Mapping[str, Any],
    before: Mapping[str, Any] | None = None,
    personal_fields: Iterable[str] = (),
    summary: str | None = None,
    facts: Mapping[str, Any] | None = None,
) -> None:
    """`after`/`before` go to the audit trail; `facts` join the lead's ids in the event payload."""
    await audit.record(
        session,
        action=event_type,
        object_type=events.AGGREGATE,
        object_id=lead.id,
        before=before,
        after=after,
        personal_fields=personal_fields,
        summary=summary,
    )
    await publish(
        session,
        type=event_type,
        aggregate_type=events.AGGREGATE,
        aggregate_id=lead.id,
        payload=events.lead_payload(lead, **(facts or {})),
        partition_key=lead.customer_id,  # a client's leads in order (broker mode)
    )
