"""Routing: the generic engine that places work items (leads, requests, jobs) with agents.

Public interface for other contexts:
- `submit(session, reference=..., kind=..., attributes=..., priority=..., weight=...)` ->
  `SubmitResult(item_id, state, agent_id, offer_ids)`: placed in the caller's transaction;
- `submit_many(session, [NewItem(...), ...], callers=...)`: many items decided together, each
  with the outcome `submit` would give it (imports, grouped API intake; see placement.py);
- `complete(session, reference)`, `cancel(session, reference)`,
  `record_first_response(session, reference)`;
- `agent_for_user(session, user_id)`, `get_agent(session, agent_id)`;
- `decisions_for_reference(session, reference)`: why the item went where it went (the decision
  log; render with the `routing/_decisions.html` macros);
- `register_reference_describer(prefix, describer)` with `ReferenceSummary`: how the inbox shows
  the records behind references `<prefix>:...` (see references.py);
- events in `routing.events` (`routing.item.assigned`, `routing.item.unassigned`, ...), whose
  payloads carry the item's `reference` so submitters map them back.
"""

from __future__ import annotations

from typing import Any

from allot.kernel.auth import define_permission
from allot.kernel.i18n import N_
from allot.kernel.web.nav import NavItem, register_nav

from . import events
from .agent_service import agent_for_user, get_agent
from .decision import register_scorer
from .explanations import decisions_for_reference
from .placement import NewItem, submit_many
from .references import ReferenceSummary, register_reference_describer
from .schemas import SubmitResult
from .service import cancel, complete, item_by_reference, record_first_response, submit
from .statistics import (
    ItemCounts,
    OfferCounts,
    agent_names,
    agents_in_team,
    item_outcomes,
    offer_outcomes,
    team_names,
)

ROUTING_MANAGE = define_permission(
    "routing:manage", "Manage agents and queues, see every offer", roles=("manager",)
)
ROUTING_READ = define_permission(
    "routing:read", "See agents, queues and their load", roles=("manager", "analyst")
)
ROUTING_WORK = define_permission(
    "routing:work", "Take work: own offers and own availability", roles=("operator", "manager")
)


def install(app: Any) -> None:
    register_nav(
        NavItem(key="inbox", label=N_("My inbox"), href="/inbox", permission=ROUTING_WORK, order=20)
    )
    register_nav(
        NavItem(key="board", label=N_("Board"), href="/board", permission=ROUTING_READ, order=30)
    )
    register_nav(
        NavItem(
            key="routing-queues",
            label="Queues",
            href="/routing/queues",
            permission=ROUTING_MANAGE,
            order=600,
        )
    )
    register_nav(
        NavItem(
            key="routing-rules",
            label=N_("Routing rules"),
            href="/routing/rules",
            permission=ROUTING_MANAGE,
            order=605,
        )
    )
    register_nav(
        NavItem(
            key="routing-simulate",
            label=N_("What-if"),
            href="/routing/simulate",
            permission=ROUTING_MANAGE,
            order=606,
        )
    )
    register_nav(
        NavItem(
            key="routing-agents",
            label="Agents",
            href="/routing/agents",
            permission=ROUTING_MANAGE,
            order=610,
        )
    )
    from . import live  # the live-update consumers, and the hub they publish to

    live.install(app)
    from . import fairness_metrics  # fair-share gauges on /metrics

    fairness_metrics.install(app)


__all__ = [
    "ROUTING_MANAGE",
    "ROUTING_READ",
    "ROUTING_WORK",
    "ItemCounts",
    "NewItem",
    "OfferCounts",
    "ReferenceSummary",
    "SubmitResult",
    "agent_for_user",
    "agent_names",
    "agents_in_team",
    "cancel",
    "complete",
    "decisions_for_reference",
    "events",
    "get_agent",
    "install",
    "item_by_reference",
    "item_outcomes",
    "offer_outcomes",
    "record_first_response",
    "register_reference_describer",
    "register_scorer",
    "submit",
    "submit_many",
    "team_names",
]
