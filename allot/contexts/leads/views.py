"""Lead pages: the filtered list (htmx re-renders only the results), the intake form (errors next
to each input, values kept) and the lead page (status buttons for the allowed transitions, SLA,
notes, timeline).

A failed form post rolls the transaction back before the page is drawn again: the unit of work
commits whatever an endpoint that *returns* has written, and a half-done change must not stick.
"""

from __future__ import annotations

import uuid
from datetime import datetime, time, timedelta
from decimal import InvalidOperation
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from allot.contexts import customers, routing
from allot.kernel.auth import Principal, require
from allot.kernel.clock import utcnow
from allot.kernel.errors import AllotError, InvalidCursor, ValidationFailed
from allot.kernel.i18n import N_, locale_var
from allot.kernel.i18n import gettext as _
from allot.kernel.money import Money
from allot.kernel.pagination import PageParams
from allot.kernel.web.routers import view_router
from allot.kernel.web.templating import render
from allot.kernel.web.uow import ReadSession, WriteSession

from . import analytics_views, import_views, intake, pipeline, service
from .access import Viewer, viewer_for
from .models import Lead
from .permissions import LEADS_CREATE, LEADS_READ, LEADS_WRITE
from .repository import LeadFilter

router = view_router()
router.include_router(import_views.router)  # before /leads/{lead_id}, which would take "import"
router.include_router(analytics_views.router)  # likewise "analytics"

PAGE_SIZE = 50
TIMELINE_SIZE = 100
LIST_FIELDS = ("status", "assignee", "source", "from", "to", "q")
FORM_FIELDS = ("source", "name", "phone", "email", "amount", "term", "priority")
DETAIL_FIELDS = ("amount", "term")  # the loan details form on the lead page
# Service field names (prefix "form") -> the inputs they belong to.
FORM_INPUTS = {
    "form.source": "source",
    "form.customer.name": "name",
    "form.customer.phone": "phone",
    "form.customer.email": "email",
    "form.product.amount_minor": "amount",
    "form.product.currency": "amount",
    "form.product.term_months": "term",
    "form.priority": "priority",
}
LOST_REASON_LABELS = {
    "not_interested": N_("Not interested"),
    "unreachable": N_("Could not reach"),
    "rejected": N_("Rejected"),
    "competitor": N_("Went to a competitor"),
    "spam": N_("Spam"),
    "duplicate": N_("Duplicate"),
    "other": N_("Other reason"),
}


def _zone(request: Request) -> str:
    return str(getattr(request.app.state.settings, "business_timezone", "Europe/Moscow"))


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


async def _labels(session: AsyncSession) -> dict[str, str]:
    definition = await pipeline.get_pipeline(session)
    return {s.key: s.label(locale_var.get()) for s in definition.statuses}


async def _agent_names(session: AsyncSession, ids: set[uuid.UUID | None]) -> dict[Any, str]:
    """Names of the agents a page shows, in one query; an agent no longer known shows as the
    start of its id."""
    names: dict[Any, str] = dict(await routing.agent_names(session, ids))
    for agent_id in ids:
        if agent_id is not None and agent_id not in names:
            names[agent_id] = str(agent_id)[:8]
    return names


def _lost_reasons() -> list[tuple[str, str]]:
    return [(key, _(label)) for key, label in LOST_REASON_LABELS.items()]


# -- the list ---------------------------------------------------------------------------------
def _day_start(text: str, zone: str) -> datetime:
    day = datetime.fromisoformat(text).date()
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(zone))


def _list_filter(
    form: dict[str, str], viewer: Viewer, zone: str
) -> tuple[LeadFilter, dict[str, str]]:
    errors: dict[str, str] = {}
    bounds: dict[str, datetime | None] = {"from": None, "to": None}
    for name in bounds:
        if form[name]:
            try:
                bounds[name] = _day_start(form[name], zone)
            except ValueError:
                errors[name] = _("Enter a date, e.g. 2026-01-05")
    until = bounds["to"] + timedelta(days=1) if bounds["to"] else None  # the whole last day
    assignee = form["assignee"]
    return (
        LeadFilter(
            status=form["status"] or None,
            assignee_id=viewer.agent_id if assignee == "me" else None,
            unassigned=assignee == "none",
            source=form["source"].lower() or None,
            created_from=bounds["from"],
            created_to=until,
            q=form["q"] or None,
        ),
        errors,
    )


@router.get("/leads")
async def leads_page(
    request: Request, session: ReadSession, principal: Principal = require(LEADS_READ)
) -> Response:
    form = {name: request.query_params.get(name, "").strip() for name in LIST_FIELDS}
    viewer = await viewer_for(session, principal, acting=True)
    filters, errors = _list_filter(form, viewer, _zone(request))
    rows: list[Lead] = []
    next_url = None
    if form["assignee"] == "me" and viewer.agent_id is None:
        errors["assignee"] = _("You are not an agent, so no leads are assigned to you")
    if not errors:
        page = PageParams(cursor=request.query_params.get("cursor") or None, limit=PAGE_SIZE)
        try:
            found, next_cursor = await service.list_leads(session, filters, page, viewer)
            rows = list(found)
            if next_cursor:
                query = {k: v for k, v in form.items() if v}
                next_url = "/leads?" + urlencode({**query, "cursor": next_cursor})
        except InvalidCursor:
            errors["cursor"] = _("This page link is no longer valid; search again")
    cards = await customers.get_customers(session, list({r.customer_id for r in rows}))
    context = {
        "form": form,
        "errors": errors,
        "leads": rows,
        "customers": cards,
        "agents": await _agent_names(session, {r.assignee_id for r in rows}),
        "labels": await _labels(session),
        "next_url": next_url,
        "now": utcnow(),
        "timezone": _zone(request),
        "is_agent": viewer.agent_id is not None,
        "can_create": principal.has(LEADS_CREATE),
    }
    return render(request, "leads/list.html", context, block="results")


# -- the intake form --------------------------------------------------------------------------
def _form_page(
    request: Request, values: dict[str, str], errors: dict[str, str], status_code: int = 200
) -> Response:
    context = {"values": values, "errors": errors}
    return render(request, "leads/new.html", context, block="content", status_code=status_code)


@router.get("/leads/new")
async def new_lead_page(request: Request, principal: Principal = require(LEADS_CREATE)) -> Response:
    values = dict.fromkeys(FORM_FIELDS, "")
    values.update(source="web", priority="0")
    return _form_page(request, values, {})


def _parse_numbers(values: dict[str, str]) -> tuple[dict[str, int | None], dict[str, str]]:
    errors: dict[str, str] = {}
    parsed: dict[str, int | None] = {"amount_minor": None, "term_months": None, "priority": 0}
    amount = values["amount"].replace(" ", "").replace("\u00a0", "").replace(",", ".")
    if amount:
        try:
            parsed["amount_minor"] = Money.of(amount, "RUB").amount_minor
        except (InvalidOperation, ValueError):
            errors["amount"] = _("Enter an amount in roubles, e.g. 150000 or 150000.50")
    for name, key in (("term", "term_months"), ("priority", "priority")):
        if values[name]:
            try:
                parsed[key] = int(values[name])
            except ValueError:
                errors[name] = _("Enter a whole number")
    return parsed, errors


def _input_errors(exc: AllotError) -> dict[str, str]:
    errors: dict[str, str] = {}
    for error in exc.errors:
        errors.setdefault(FORM_INPUTS.get(error.field, "__all__"), _(error.message))
    if not errors:
        errors["__all__"] = _(exc.detail or exc.title)
    return errors


@router.post("/leads/new")
async def create_lead(
    request: Request, session: WriteSession, principal: Principal = require(LEADS_CREATE)
) -> Response:
    form = await request.form()
    values = {name: _text(form, name) for name in FORM_FIELDS}
    numbers, errors = _parse_numbers(values)
    new = intake.NewLead(
        source=values["source"],
        customer_name=values["name"],
        customer_phone=values["phone"] or None,
        customer_email=values["email"] or None,
        amount_minor=numbers["amount_minor"],
        term_months=numbers["term_months"],
        priority=numbers["priority"] or 0,
    )
    try:
        checked = intake.validate_new_lead(new, prefix="form")
    except ValidationFailed as exc:
        errors = {**_input_errors(exc), **errors}
    if errors:
        return _form_page(request, values, errors, status_code=422)
    try:
        lead = await intake.create_lead(session, checked, prefix="form", validated=True)
    except AllotError as exc:
        await session.rollback()
        return _form_page(request, values, _input_errors(exc), status_code=exc.status)
    return RedirectResponse(f"/leads/{lead.id}", status_code=303)


# -- one lead ---------------------------------------------------------------------------------
def _detail_values(lead: Lead) -> dict[str, str]:
    """The loan details as the edit form shows them: roubles without needless kopecks."""
    amount = ""
    if lead.amount is not None:
        major = lead.amount.major
        amount = str(major.quantize(1) if major == major.to_integral_value() else major)
    term = "" if lead.term_months is None else str(lead.term_months)
    return {"amount": amount, "term": term}


async def _lead_context(
    session: AsyncSession, lead_id: uuid.UUID, viewer: Viewer, principal: Principal
) -> dict[str, Any]:
    lead = await service.get_lead(session, lead_id, viewer)
    definition = await pipeline.get_pipeline(session)
    locale = locale_var.get()
    labels = {s.key: s.label(locale) for s in definition.statuses}
    targets = [
        {"key": s.key, "label": s.label(locale), "won": s.is_won,
         "lost": s.is_terminal and not s.is_won}
        for s in await service.allowed_targets(session, lead)
    ]  # fmt: skip
    entries, _next = await service.timeline(
        session, lead.id, PageParams(limit=TIMELINE_SIZE), viewer
    )
    agents = await _agent_names(
        session, {lead.assignee_id} | {e.agent_id for e in entries if e.agent_id}
    )
    cards = await customers.get_customers(session, [lead.customer_id])
    customer = cards.get(lead.customer_id)
    now = utcnow()
    due = lead.first_response_due_at
    return {
        "lead": lead,
        "details": _detail_values(lead),
        "customer": customer,
        "title": customer.name if customer is not None and customer.name else _("Lead"),
        "labels": labels,
        "targets": targets,
        "timeline": entries,
        "agents": agents,
        "lost_reasons": _lost_reasons(),
        "lost_reason_labels": {k: _(v) for k, v in LOST_REASON_LABELS.items()},
        "sla": lead.sla_state(now),
        "minutes_left": max(0, int((due - now).total_seconds() // 60)) if due else None,
        "can_write": principal.has(LEADS_WRITE),
        "decisions": await routing.decisions_for_reference(session, f"lead:{lead.id}")
        if principal.has(routing.ROUTING_READ)
        else None,
        "errors": {},
        "note": "",
    }


@router.get("/leads/{lead_id}")
async def lead_page(
    request: Request,
    lead_id: uuid.UUID,
    session: ReadSession,
    principal: Principal = require(LEADS_READ),
) -> Response:
    viewer = await viewer_for(session, principal)
    context = await _lead_context(session, lead_id, viewer, principal)
    context["timezone"] = _zone(request)
    block = "sla" if request.query_params.get("part") == "sla" else "content"
    return render(request, "leads/lead.html", context, block=block)


async def _lead_page_with_error(
    request: Request,
    session: AsyncSession,
    lead_id: uuid.UUID,
    principal: Principal,
    exc: AllotError,
    *,
    field: str,
    note: str = "",
) -> Response:
    await session.rollback()
    viewer = await viewer_for(session, principal)
    context = await _lead_context(session, lead_id, viewer, principal)
    message = _(exc.errors[0].message) if exc.errors else _(exc.title)
    context.update(timezone=_zone(request), errors={field: message}, note=note)
    return render(request, "leads/lead.html", context, block="content", status_code=exc.status)


@router.post("/leads/{lead_id}/status")
async def change_status(
    request: Request,
    lead_id: uuid.UUID,
    session: WriteSession,
    principal: Principal = require(LEADS_WRITE),
) -> Response:
    form = await request.form()
    reason = _text(form, "lost_reason") or None
    viewer = await viewer_for(session, principal)
    try:
        await service.change_status(
            session, lead_id, _text(form, "status"), viewer, lost_reason=reason, prefix="form"
        )
    except (ValidationFailed, service.InvalidTransition) as exc:
        return await _lead_page_with_error(
            request, session, lead_id, principal, exc, field="status"
        )
    return RedirectResponse(f"/leads/{lead_id}", status_code=303)


@router.post("/leads/{lead_id}/notes")
async def add_note(
    request: Request,
    lead_id: uuid.UUID,
    session: WriteSession,
    principal: Principal = require(LEADS_WRITE),
) -> Response:
    form = await request.form()
    body = _text(form, "body")
    viewer = await viewer_for(session, principal, acting=True)
    try:
        await service.add_note(session, lead_id, body, viewer, prefix="form")
    except ValidationFailed as exc:
        return await _lead_page_with_error(
            request, session, lead_id, principal, exc, field="body", note=body
        )
    return RedirectResponse(f"/leads/{lead_id}#timeline", status_code=303)


@router.post("/leads/{lead_id}/details")
async def update_details(
    request: Request,
    lead_id: uuid.UUID,
    session: WriteSession,
    principal: Principal = require(LEADS_WRITE),
) -> Response:
    """The loan amount and term. An input the form sent empty clears that detail (a form cannot
    send null); one it did not send at all keeps its value."""
    form = await request.form()
    sent = [name for name in DETAIL_FIELDS if name in form]
    values = {name: _text(form, name) for name in DETAIL_FIELDS}
    numbers, errors = _parse_numbers({**values, "priority": ""})
    changes: dict[str, Any] = {}
    if "amount" in sent:
        changes["amount_minor"] = numbers["amount_minor"]
    if "term" in sent:
        changes["term_months"] = numbers["term_months"]
    if not errors:
        viewer = await viewer_for(session, principal)
        try:
            await service.update_lead(session, lead_id, changes, viewer, prefix="form")
        except ValidationFailed as exc:
            errors = _input_errors(exc)
    if errors:
        await session.rollback()
        viewer = await viewer_for(session, principal)
        context = await _lead_context(session, lead_id, viewer, principal)
        context.update(timezone=_zone(request), details=values, errors=errors)
        return render(request, "leads/lead.html", context, block="content", status_code=422)
    return RedirectResponse(f"/leads/{lead_id}", status_code=303)
