"""Taking a lead in: validation (shared by the API, the web form and bulk imports) and creation.

Creation is the hot path (the target is 1,000+ leads/s): one round trip for the pipeline's
initial status and the source's SLA, the customer intake, the routing submission, ONE INSERT of
the lead (which is also the dedup check, L1), one multi-row INSERT of its timeline rows, one
audit row and the outbox rows. No read-before-write and no ORM loads.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import configure_mappers

from allot.contexts import customers, routing
from allot.contexts.leads.recording import record_lead_change
from allot.kernel.clock import utcnow
from allot.kernel.context import current_actor
from allot.kernel.errors import Conflict, FieldError, ValidationFailed
from allot.kernel.events import publish
from allot.kernel.i18n import N_
from allot.kernel.ids import new_id
from allot.kernel.money import Money

from . import events
from . import repository as repo
from .models import DEFAULT_FIRST_RESPONSE_SECONDS, SOURCE_PATTERN, Activity, Lead
from .pipeline import DEFAULT_PIPELINE, ensure_seeded

MAX_EXTERNAL_ID = 255
MAX_NAME = 200
PRIORITY_RANGE = (-100, 100)
MAX_AMOUNT_MINOR = 10**15
TERM_RANGE = (1, 600)
MAX_ATTRIBUTES_BYTES = 16_384
MAX_ATTRIBUTE_KEY = 64
LEAD_KIND = "lead"

# English messages (the API's); the web form shows them translated.
BAD_SOURCE = N_("Lower-case letters, digits and _ . : - only, up to 64 characters")
REQUIRED = N_("Required")
TOO_LONG = N_("Too long")
OUT_OF_RANGE = N_("Out of range")
BAD_CURRENCY = N_("Not a currency code such as RUB")
BAD_ATTRIBUTES = N_("Must be a JSON object of at most 16 KB with keys up to 64 characters")
DUPLICATE = N_("A lead with this source and external id already exists")


@dataclass(frozen=True, slots=True)
class NewLead:
    """A lead to take in, as plain values (API body, form fields or a CSV row)."""

    source: str
    customer_name: str | None = None
    customer_phone: str | None = None
    customer_email: str | None = None
    external_id: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    priority: int = 0
    amount_minor: int | None = None
    currency: str = "RUB"
    term_months: int | None = None


def _blank_to_none(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def _attributes_ok(attributes: Any) -> bool:
    if not isinstance(attributes, Mapping):
        return False
    if any(not isinstance(k, str) or not k or len(k) > MAX_ATTRIBUTE_KEY for k in attributes):
        return False
    try:
        encoded = json.dumps(attributes, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return len(encoded.encode()) <= MAX_ATTRIBUTES_BYTES


def _in(value: Any, bounds: tuple[int, int]) -> bool:
    return (
        isinstance(value, int) and not isinstance(value, bool) and bounds[0] <= value <= bounds[1]
    )


def detail_errors(
    prefix: str,
    *,
    priority: Any,
    attributes: Any,
    amount_minor: Any,
    currency: str,
    term_months: Any,
) -> list[FieldError]:
    """The rules for a lead's own details (not its customer), shared by intake and edits."""
    errors: list[FieldError] = []

    def fail(name: str, message: str, code: str = "invalid") -> None:
        errors.append(FieldError(f"{prefix}.{name}", message, code))

    if not _in(priority, PRIORITY_RANGE):
        fail("priority", OUT_OF_RANGE, "out_of_range")
    if amount_minor is not None and not _in(amount_minor, (0, MAX_AMOUNT_MINOR)):
        fail("product.amount_minor", OUT_OF_RANGE, "out_of_range")
    try:
        Money(0, currency)
        valid_currency = currency.isalpha()
    except ValueError:
        valid_currency = False
    if not valid_currency:
        fail("product.currency", BAD_CURRENCY, "invalid_currency")
    if term_months is not None and not _in(term_months, TERM_RANGE):
        fail("product.term_months", OUT_OF_RANGE, "out_of_range")
    if not _attributes_ok(attributes):
        fail("attributes", BAD_ATTRIBUTES)
    return errors


def raise_if(errors: list[FieldError]) -> None:
    if errors:
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
        raise ValidationFailed(detail=detail, errors=errors)


def validate_new_lead(new: NewLead, *, prefix: str = "body") -> NewLead:
    """Check and normalise every field; raises ValidationFailed naming ALL bad fields
    (`<prefix>.source`, `<prefix>.customer.phone`, `<prefix>.product.amount_minor`, ...)."""
    errors: list[FieldError] = []

    def fail(name: str, message: str, code: str = "invalid") -> None:
        errors.append(FieldError(f"{prefix}.{name}", message, code))

    source = (new.source or "").strip().lower()
    if not SOURCE_PATTERN.match(source):
        fail("source", BAD_SOURCE)
    external_id = _blank_to_none(new.external_id)
    if external_id is not None and len(external_id) > MAX_EXTERNAL_ID:
        fail("external_id", TOO_LONG, "too_long")
    name = _blank_to_none(new.customer_name)
    if name is None:
        fail("customer.name", REQUIRED, "missing")
    elif len(name) > MAX_NAME:
        fail("customer.name", TOO_LONG, "too_long")
    phone, email = _blank_to_none(new.customer_phone), _blank_to_none(new.customer_email)
    try:
        if phone is not None:
            phone = customers.normalize_phone(phone, f"{prefix}.customer.phone")
    except ValidationFailed as exc:
        errors.extend(exc.errors)
    try:
        if email is not None:
            email = customers.normalize_email(email, f"{prefix}.customer.email")
    except ValidationFailed as exc:
        errors.extend(exc.errors)
    currency = (new.currency or "RUB").strip().upper()
    errors += detail_errors(
        prefix,
        priority=new.priority,
        attributes=new.attributes,
        amount_minor=new.amount_minor,
        currency=currency,
        term_months=new.term_months,
    )
    raise_if(errors)
    return dataclasses.replace(
        new,
        source=source,
        external_id=external_id,
        customer_name=name,
        customer_phone=phone,
        customer_email=email,
        attributes=dict(new.attributes),
        currency=currency,
    )


def search_text(new: NewLead) -> str:
    digits = "".join(ch for ch in new.customer_phone or "" if ch.isdigit())
    parts = (new.customer_name, digits, new.customer_email, new.external_id)
    return " ".join(p.lower() for p in parts if p)


async def create_lead(
    session: AsyncSession, new: NewLead, *, prefix: str = "body", validated: bool = False
) -> Lead:
    """Take a lead in and route it, in the caller's transaction. Returns the lead as stored (a
    detached object). Raises ValidationFailed naming the field, or Conflict with `existing_id`
    when (source, external_id) is already a lead."""
    if not validated:
        new = validate_new_lead(new, prefix=prefix)
    now = utcnow()
    initial, due = await status_and_due(session, new.source, now)
    customer = await customers.intake(
        session,
        source=new.source,
        name=new.customer_name,
        phone=new.customer_phone,
        email=new.customer_email,
        field_prefix=f"{prefix}.customer",
    )
    lead_id = new_id()
    routed = await routing.submit(
        session,
        reference=f"lead:{lead_id}",
        kind=LEAD_KIND,
        attributes=routing_attributes(new),
        priority=new.priority,
        weight=1,
        first_response_due_at=due,
    )
    values = lead_row(lead_id, new, customer.id, initial, routed.agent_id, due, now)
    # The dedup check is this INSERT itself (no lookup first): a duplicate has done the customer
    # and routing work in vain, but the Conflict rolls all of it back, and the common, unique
    # lead pays no extra round trip.
    if not await repo.insert_lead(session, values):
        assert new.external_id is not None  # only (source, external_id) can collide
        existing = await repo.lead_id_by_external_id(session, new.source, new.external_id)
        raise Conflict(detail=DUPLICATE, extra={"existing_id": str(existing)})
    lead = stored_lead(values)
    await record_intake(session, lead, now)
    return lead


_new_lead = Lead.__mapper__.class_manager.new_instance


def stored_lead(values: dict[str, Any]) -> Lead:
    """The lead just INSERTed with `values` (`lead_row`), as a detached object to read from (the
    answer, its events and audit entry). Filled as the ORM fills a row it loads, not through
    `Lead(**values)`, whose change tracking per attribute cost a tenth of a group-commit batch;
    it is never added to a session (its row is written already)."""
    configure_mappers()  # what the constructor would do first (a flag check once configured)
    lead: Lead = _new_lead()
    lead.__dict__.update(values)
    return lead


async def status_and_due(session: AsyncSession, source: str, now: datetime) -> tuple[str, datetime]:
    """A new lead's status (the pipeline's initial one) and first-response deadline (the
    source's SLA, else the default, from now)."""
    initial, sla_seconds = await repo.intake_settings(session, source)
    if initial is None:
        await ensure_seeded(session)
        initial = DEFAULT_PIPELINE.initial.key
    return initial, now + timedelta(seconds=sla_seconds or DEFAULT_FIRST_RESPONSE_SECONDS)


def routing_attributes(new: NewLead) -> dict[str, Any]:
    # Queue rules and scorers match on these; the lead's own facts win over custom keys.
    return {
        **new.attributes,
        "source": new.source,
        "amount_minor": new.amount_minor,
        "currency": new.currency if new.amount_minor is not None else None,
        "term_months": new.term_months,
    }


def lead_row(
    lead_id: uuid.UUID,
    new: NewLead,
    customer_id: uuid.UUID,
    status: str,
    agent_id: uuid.UUID | None,
    due: datetime,
    now: datetime,
) -> dict[str, Any]:
    return {
        "id": lead_id,
        "source": new.source,
        "external_id": new.external_id,
        "customer_id": customer_id,
        "status": status,
        "priority": new.priority,
        "attributes": dict(new.attributes),
        "amount_minor": new.amount_minor,
        "currency": new.currency if new.amount_minor is not None else None,
        "term_months": new.term_months,
        "assignee_id": agent_id,
        "assignee_changed_at": now if agent_id is not None else None,
        "first_response_due_at": due,
        "first_responded_at": None,
        "lost_reason": None,
        "closed_at": None,
        "search_text": search_text(new),
        "created_at": now,
        "updated_at": now,
    }


def lead_snapshot(lead: Lead) -> dict[str, Any]:
    """What the audit trail keeps of a lead (no customer data: that is the customer's card)."""
    return {
        "source": lead.source,
        "external_id": lead.external_id,
        "customer_id": lead.customer_id,
        "status": lead.status,
        "priority": lead.priority,
        "attributes": lead.attributes,
        "amount_minor": lead.amount_minor,
        "currency": lead.currency,
        "term_months": lead.term_months,
        "assignee_id": lead.assignee_id,
        "first_response_due_at": lead.first_response_due_at,
        "lost_reason": lead.lost_reason,
    }


def activity(lead: Lead, kind: str, now: datetime, **fields: Any) -> Activity:
    return Activity(**activity_values(lead.id, kind, now, **fields))


def activity_values(lead_id: uuid.UUID, kind: str, now: datetime, **fields: Any) -> dict[str, Any]:
    """A timeline row of the lead, by the current actor, as the INSERT takes it."""
    actor = current_actor()
    return {
        "id": new_id(),
        "lead_id": lead_id,
        "kind": kind,
        "from_status": None,
        "to_status": None,
        "agent_id": None,
        "reason": None,
        "body": None,
        "actor_kind": actor.kind,
        "actor_id": actor.id,
        "actor_label": actor.label[:255],
        "created_at": now,
        **fields,
    }


async def record_intake(session: AsyncSession, lead: Lead, now: datetime) -> None:
    """The timeline rows, audit entry and events of a lead just taken in."""
    rows = [activity_values(lead.id, "created", now, to_status=lead.status)]
    if lead.assignee_id is not None:
        rows.append(
            activity_values(lead.id, "assigned", now, agent_id=lead.assignee_id, reason="direct")
        )
    repo.add_values(session, rows)
    await record_lead_change(
        session,
        lead,
        events.LEAD_CREATED,
        after=lead_snapshot(lead),
        personal_fields=("attributes",),
        facts={
            "source": lead.source,
            "external_id": lead.external_id,
            "status": lead.status,
            "priority": lead.priority,
            "assignee_id": str(lead.assignee_id) if lead.assignee_id else None,
            "amount_minor": lead.amount_minor,
            "currency": lead.currency,
            "term_months": lead.term_months,
            "first_response_due_at": _iso(lead.first_response_due_at),
        },
    )
    if lead.assignee_id is not None:
        await publish(
            session,
            type=events.LEAD_ASSIGNED,
            aggregate_type=events.AGGREGATE,
            aggregate_id=lead.id,
            payload=events.lead_payload(
                lead, agent_id=str(lead.assignee_id), previous_agent_id=None, at_intake=True
            ),
            partition_key=lead.customer_id,
        )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
