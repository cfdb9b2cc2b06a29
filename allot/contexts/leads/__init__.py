"""Leads: leads taken in from external sources (API, web form, imports), routed to managers by
workload through the routing context, and carried along a configurable status pipeline with a
first-response SLA, notes and a timeline.

The public interface (the only names other contexts and the CLI may use):

- `NewLead`, `validate_new_lead(new, prefix=...)` and `create_lead(session, new, prefix=...,
  validated=...)`: the intake, shared by the API, the web form and bulk imports (validate every
  row first, then create the valid ones with `validated=True`);
- `InvalidTransition` (409 `urn:allot:problem:invalid-transition`), `LOST_REASONS`;
- events in `leads.events` (`leads.lead.created`, `leads.lead.status_changed`,
  `leads.lead.assigned`, `leads.note.added`, `leads.lead.updated`), every payload carrying
  `lead_id` and `customer_id`;
- the permissions `leads:read`, `leads:write`, `leads:create`, `leads:configure`;
- `install(app)` registers with routing how its inbox describes `lead:<id>` (describe.py).
"""

from __future__ import annotations

from typing import Any

from allot.contexts import routing
from allot.kernel.i18n import N_
from allot.kernel.web.middleware import allow_upload
from allot.kernel.web.nav import NavItem, register_nav

from . import events
from .describe import describe_leads
from .intake import NewLead, create_lead, validate_new_lead
from .permissions import LEADS_CONFIGURE, LEADS_CREATE, LEADS_READ, LEADS_WRITE
from .service import LOST_REASONS, InvalidTransition


def install(app: Any) -> None:
    register_nav(
        NavItem(key="leads", label=N_("Leads"), href="/leads", permission=LEADS_READ, order=10)
    )
    register_nav(
        NavItem(
            key="lead-analytics",
            label=N_("Analytics"),
            href="/leads/analytics",
            permission=LEADS_READ,
            order=35,
        )
    )
    # CSV files are bigger than API bodies: these two take up to ALLOT_MAX_UPLOAD_BYTES.
    allow_upload("/leads/import")
    allow_upload("/api/v1/lead-imports")
    # The inbox shows an offered or assigned lead by its customer, phone and loan.
    routing.register_reference_describer("lead", describe_leads)


__all__ = [
    "LEADS_CONFIGURE",
    "LEADS_CREATE",
    "LEADS_READ",
    "LEADS_WRITE",
    "LOST_REASONS",
    "InvalidTransition",
    "NewLead",
    "create_lead",
    "events",
    "install",
    "validate_new_lead",
]
