"""JSON API: leads (`/api/v1/leads`), the status pipeline (`/api/v1/lead-pipeline`) and the
first-response SLA per source (`/api/v1/lead-sla`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts import customers
from allot.kernel.auth import Principal, require
from allot.kernel.clock import utcnow
from allot.kernel.errors import ValidationFailed
from allot.kernel.idempotency import IdempotencyKeyHeader, idempotency_key
from allot.kernel.pagination import PageParams, page_params
from allot.kernel.web.routers import api_router
from allot.kernel.web.uow import ReadSession, WriteSession, get_database, write_session

from . import analytics_api, group_intake, intake, pipeline, service
from .access import viewer_for
from .models import Lead
from .permissions import LEADS_CONFIGURE, LEADS_CREATE, LEADS_READ, LEADS_WRITE
from .repository import LeadFilter
from .schemas import (
    LeadCreate,
    LeadOut,
    LeadPage,
    LeadUpdate,
    NoteCreate,
    PipelineIO,
    SlaPolicyIn,
    SlaPolicyOut,
    StatusChange,
    TimelineEntry,
    TimelinePage,
)

router = APIRouter()
leads = api_router("/leads", "leads")
lead_pipeline = api_router("/lead-pipeline", "lead pipeline")
lead_sla = api_router("/lead-sla", "lead pipeline")
Pagination = Annotated[PageParams, Depends(page_params)]
LeadId = Annotated[uuid.UUID, Path(description="The lead's id")]

DUPLICATE_EXAMPLE = {
    "type": "urn:allot:problem:conflict",
    "title": "Conflict",
    "status": 409,
    "detail": "A lead with this source and external id already exists",
    "instance": "/api/v1/leads",
    "existing_id": "01937f4e-8c1a-7b3e-9f00-6d2c1b0a9e11",
}
INVALID_TRANSITION_EXAMPLE = {
    "type": "urn:allot:problem:invalid-transition",
    "title": "This status change is not allowed",
    "status": 409,
    "detail": "A lead cannot move from 'new' to 'won'",
    "from_status": "new",
    "to_status": "won",
}


def _problem(description: str, example: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"},
                "example": example,
            }
        },
    }


async def _with_customers(session: AsyncSession, rows: Sequence[Lead]) -> list[LeadOut]:
    cards = await customers.get_customers(session, list({row.customer_id for row in rows}))
    now = utcnow()
    return [LeadOut.of(row, now, cards.get(row.customer_id)) for row in rows]


# -- leads ------------------------------------------------------------------------------------
@leads.post(
    "",
    status_code=201,
    response_model=LeadOut,
    summary="Take a lead in",
    responses={409: _problem("A lead with this source and external id exists", DUPLICATE_EXAMPLE)},
)
async def create_lead(
    request: Request,
    body: LeadCreate,
    idempotency: IdempotencyKeyHeader = None,
    principal: Principal = require(LEADS_CREATE),
) -> LeadOut:
    """Validates the lead and its customer (the customer card is found or created by phone or
    e-mail), routes it at once and answers with the stored lead: `assignee_id` is the agent
    working it, or null while it waits for a free agent. The first-response deadline is the
    source's SLA (default 15 minutes) from now. The answer comes after the lead is committed.

    Send `Idempotency-Key` to retry safely. A lead whose `(source, external_id)` is already
    taken is a 409 problem carrying `existing_id`.

    Leads sent at the same moment by several clients are taken in together, in one
    transaction (group commit); each gets the answer it would get alone. Requests with an
    `Idempotency-Key` are taken in one by one, with the key stored in the lead's transaction."""
    product = body.product
    new = intake.validate_new_lead(
        intake.NewLead(
            source=body.source,
            customer_name=body.customer.name,
            customer_phone=body.customer.phone,
            customer_email=body.customer.email,
            external_id=body.external_id,
            attributes=body.attributes,
            priority=body.priority,
            amount_minor=product.amount_minor if product else None,
            currency=product.currency if product else "RUB",
            term_months=product.term_months if product else None,
        )
    )
    if idempotency is None:
        lead = await group_intake.take_in(get_database(request), new)
    else:
        session = await write_session(request)
        await idempotency_key(request, session, principal, idempotency)
        lead = await intake.create_lead(session, new, validated=True)
    return LeadOut.of(lead, utcnow())


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _assignee_filter(value: str | None) -> tuple[uuid.UUID | None, bool]:
    if value is None or value == "":
        return None, False
    if value == "none":
        return None, True
    try:
        return uuid.UUID(value), False
    except ValueError as exc:
        raise ValidationFailed.on("query.assignee_id", "An agent id or `none`") from exc


@leads.get("", response_model=LeadPage, summary="List leads")
async def list_leads(
    session: ReadSession,
    pagination: Pagination,
    status: Annotated[str | None, Query(max_length=64, description="Status key")] = None,
    assignee_id: Annotated[
        str | None, Query(description="An agent's id, or `none` for leads waiting for one")
    ] = None,
    source: Annotated[str | None, Query(max_length=64)] = None,
    created_from: Annotated[
        datetime | None, Query(description="Created at or after (ISO 8601; UTC if no offset)")
    ] = None,
    created_to: Annotated[datetime | None, Query(description="Created before")] = None,
    q: Annotated[
        str | None,
        Query(max_length=200, description="Text: customer name, phone, e-mail or external id"),
    ] = None,
    principal: Principal = require(LEADS_READ),
) -> LeadPage:
    """Newest first, with an opaque `cursor` for the next page. Operators see only the leads
    assigned to them."""
    agent, unassigned = _assignee_filter(assignee_id)
    filters = LeadFilter(
        status=status or None,
        assignee_id=agent,
        unassigned=unassigned,
        source=source.strip().lower() if source else None,
        created_from=_aware(created_from),
        created_to=_aware(created_to),
        q=q,
    )
    viewer = await viewer_for(session, principal)
    rows, next_cursor = await service.list_leads(session, filters, pagination, viewer)
    return LeadPage(items=await _with_customers(session, rows), next_cursor=next_cursor)


@leads.get("/{lead_id}", response_model=LeadOut, summary="A lead")
async def get_lead(
    lead_id: LeadId, session: ReadSession, principal: Principal = require(LEADS_READ)
) -> LeadOut:
    """The lead with its customer's card. A lead the caller may not see is a 404."""
    lead = await service.get_lead(session, lead_id, await viewer_for(session, principal))
    return (await _with_customers(session, [lead]))[0]


@leads.patch("/{lead_id}", response_model=LeadOut, summary="Change a lead's details")
async def update_lead(
    lead_id: LeadId,
    body: LeadUpdate,
    session: WriteSession,
    principal: Principal = require(LEADS_WRITE),
) -> LeadOut:
    """Replace the custom `attributes`, or change product fields (only those sent)."""
    changes: dict[str, Any] = {}
    if body.attributes is not None:
        changes["attributes"] = body.attributes
    if body.product is not None:
        changes.update(body.product.model_dump(include=body.product.model_fields_set))
    viewer = await viewer_for(session, principal)
    lead = await service.update_lead(session, lead_id, changes, viewer)
    return LeadOut.of(lead, utcnow())


@leads.post(
    "/{lead_id}/status",
    response_model=LeadOut,
    summary="Move a lead to another status",
    responses={409: _problem("Not an allowed transition", INVALID_TRANSITION_EXAMPLE)},
)
async def change_status(
    lead_id: LeadId,
    body: StatusChange,
    session: WriteSession,
    principal: Principal = require(LEADS_WRITE),
) -> LeadOut:
    """Only along the pipeline's transitions (else 409 `invalid-transition`). The first change
    is the lead's first response; a terminal status (won, lost) closes its work item, which
    frees the agent for the next waiting lead."""
    viewer = await viewer_for(session, principal)
    lead = await service.change_status(
        session, lead_id, body.status, viewer, lost_reason=body.lost_reason
    )
    return LeadOut.of(lead, utcnow())


@leads.post("/{lead_id}/notes", status_code=201, response_model=TimelineEntry, summary="Add a note")
async def add_note(
    lead_id: LeadId,
    body: NoteCreate,
    session: WriteSession,
    principal: Principal = require(LEADS_WRITE),
) -> TimelineEntry:
    """A note on the lead's timeline. The assignee's first note is the first response."""
    viewer = await viewer_for(session, principal, acting=True)
    note = await service.add_note(session, lead_id, body.body, viewer)
    return TimelineEntry.of(note)


@leads.get("/{lead_id}/timeline", response_model=TimelinePage, summary="A lead's timeline")
async def timeline(
    lead_id: LeadId,
    session: ReadSession,
    pagination: Pagination,
    principal: Principal = require(LEADS_READ),
) -> TimelinePage:
    """Creation, status changes, assignment changes and notes, newest first."""
    viewer = await viewer_for(session, principal)
    rows, next_cursor = await service.timeline(session, lead_id, pagination, viewer)
    return TimelinePage(items=[TimelineEntry.of(r) for r in rows], next_cursor=next_cursor)


# -- configuration ----------------------------------------------------------------------------
@lead_pipeline.get("", response_model=PipelineIO, summary="The status pipeline")
async def get_pipeline(
    session: ReadSession, principal: Principal = require(LEADS_READ)
) -> PipelineIO:
    """Statuses in order, with labels in Russian and English, and the allowed transitions."""
    return PipelineIO.of(await pipeline.get_pipeline(session))


@lead_pipeline.put("", response_model=PipelineIO, summary="Replace the status pipeline")
async def replace_pipeline(
    body: PipelineIO, session: WriteSession, principal: Principal = require(LEADS_CONFIGURE)
) -> PipelineIO:
    """Keys unique, exactly one initial status, every status reachable from it, terminal
    statuses without outgoing transitions (422 naming the field otherwise). A status that
    leads are in must stay (409). Audited."""
    return PipelineIO.of(await pipeline.replace_pipeline(session, body.definition()))


@lead_sla.get("", response_model=list[SlaPolicyOut], summary="First-response SLAs")
async def sla_policies(session: ReadSession, principal: Principal = require(LEADS_READ)) -> Any:
    """Seconds from intake to the first response, per source; `*` is the fallback (900 s when
    there is no row)."""
    return await pipeline.sla_policies(session)


@lead_sla.put("/{source}", response_model=SlaPolicyOut, summary="Set a source's SLA")
async def set_sla_policy(
    source: Annotated[str, Path(max_length=64, description="A lead source, or `*`")],
    body: SlaPolicyIn,
    session: WriteSession,
    principal: Principal = require(LEADS_CONFIGURE),
) -> Any:
    """Applies to leads taken in from now on. Audited."""
    return await pipeline.set_first_response_time(session, source, body.first_response_seconds)


for sub in (leads, lead_pipeline, lead_sla, analytics_api.router):
    router.include_router(sub)
