"""Events the leads context publishes. Every payload carries `lead_id` and `customer_id` (as
strings) plus the facts a consumer needs; `occurred_at`, `schema_version` and `correlation_id`
are added by the outbox."""

from __future__ import annotations

from typing import Any

LEAD_CREATED = "leads.lead.created"
LEAD_UPDATED = "leads.lead.updated"
LEAD_STATUS_CHANGED = "leads.lead.status_changed"
# agent_id null: taken back from its assignee; `at_intake` true: assigned as it was taken in
# (the same moment as its `leads.lead.created`, whose `assignee_id` says so too).
LEAD_ASSIGNED = "leads.lead.assigned"
NOTE_ADDED = "leads.note.added"
PIPELINE_CHANGED = "leads.pipeline.changed"
SLA_POLICY_CHANGED = "leads.sla_policy.changed"

AGGREGATE = "leads.lead"
NOTE_EXCERPT_LENGTH = 100

ALL = (
    LEAD_CREATED,
    LEAD_UPDATED,
    LEAD_STATUS_CHANGED,
    LEAD_ASSIGNED,
    NOTE_ADDED,
    PIPELINE_CHANGED,
    SLA_POLICY_CHANGED,
)


def _id(value: Any) -> str | None:
    return str(value) if value is not None else None


def lead_payload(lead: Any, **facts: Any) -> dict[str, Any]:
    return {"lead_id": str(lead.id), "customer_id": _id(lead.customer_id), **facts}


def note_excerpt(body: str) -> str:
    """The start of a note, for notifications; never more than the note itself says."""
    text = " ".join(body.split())
    if len(text) <= NOTE_EXCERPT_LENGTH:
        return text
    return text[: NOTE_EXCERPT_LENGTH - 1].rstrip() + "…"
