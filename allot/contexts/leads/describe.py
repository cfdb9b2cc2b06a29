"""How routing's inbox shows a lead: the describer for references `lead:<uuid>`, registered with
routing in `install(app)` (routing never imports leads).

One query for all the leads on a page, plus the customers context's batch read of their cards
(a constant number of queries), whatever the number of offers and items.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts import customers, routing
from allot.kernel.i18n import gettext as _
from allot.kernel.web.templating import format_money

from . import repository as repo
from .models import Lead

PREFIX = "lead"


def _lead_id(reference: str) -> uuid.UUID | None:
    kind, _sep, ident = reference.partition(":")
    if kind != PREFIX:
        return None
    try:
        return uuid.UUID(ident)
    except ValueError:
        return None


def product_text(lead: Lead) -> str | None:
    """ "150 000 ₽ · 12 months" (either part may be missing)."""
    parts = []
    if lead.amount is not None:
        parts.append(format_money(lead.amount))
    if lead.term_months:
        parts.append(_("%(months)s months", months=lead.term_months))
    return " · ".join(parts) or None


async def describe_leads(
    session: AsyncSession, references: Sequence[str]
) -> dict[str, routing.ReferenceSummary]:
    wanted = {lead_id: ref for ref in references if (lead_id := _lead_id(ref)) is not None}
    if not wanted:
        return {}
    found = await repo.leads_by_ids(session, wanted)
    cards = await customers.get_customers(session, list({lead.customer_id for lead in found}))
    summaries: dict[str, routing.ReferenceSummary] = {}
    for lead in found:
        card = cards.get(lead.customer_id)
        summaries[wanted[lead.id]] = routing.ReferenceSummary(
            title=card.name if card is not None and card.name else _("Lead"),
            link=f"/leads/{lead.id}",
            phone=card.phones[0] if card is not None and card.phones else None,
            product=product_text(lead),
            source=lead.source,
            priority=lead.priority,
            created_at=lead.created_at,
            due_at=lead.first_response_due_at if lead.first_responded_at is None else None,
        )
    return summaries
