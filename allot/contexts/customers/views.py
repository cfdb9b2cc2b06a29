"""Customer pages: the search list (htmx re-renders only the results) and the card with its
contacts, consent, source and timeline, plus the edit, merge and erase forms.

A failed merge (a mistyped id, a card merged already) shows its message next to the form; the
transaction is rolled back first, so nothing half-done is committed with the page.
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import RedirectResponse, Response

from allot.kernel.auth import Principal, require
from allot.kernel.errors import Conflict, InvalidCursor, ValidationFailed
from allot.kernel.i18n import N_
from allot.kernel.i18n import gettext as _
from allot.kernel.pagination import PageParams
from allot.kernel.web.routers import view_router
from allot.kernel.web.templating import render
from allot.kernel.web.uow import ReadSession, WriteSession

from . import CUSTOMERS_ERASE, CUSTOMERS_MERGE, CUSTOMERS_READ, CUSTOMERS_WRITE, service
from .editing import update_customer
from .lifecycle import erase_customer, merge
from .schemas import MAX_CONTACTS_PER_REQUEST
from .timeline import entry_title

router = view_router()

PAGE_SIZE = 50
EDIT_FIELDS = ("name", "phones", "emails")
# The editing service's error codes -> what the form says next to the input.
EDIT_MESSAGES = {
    "invalid_phone": N_("Not a valid phone number (e.g. +7 912 345-67-89)"),
    "invalid_email": N_("Not a valid e-mail address"),
    "too_long": N_("Too long."),
    "taken": N_("Belongs to another customer"),
}
_UUID = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)


def _business_zone(request: Request) -> str:
    return str(getattr(request.app.state.settings, "business_timezone", "Europe/Moscow"))


@router.get("/customers", response_class=HTMLResponse)
async def customers_page(
    request: Request, session: ReadSession, _principal: Principal = require(CUSTOMERS_READ)
) -> Response:
    q = request.query_params.get("q", "").strip()[:200]
    cursor = request.query_params.get("cursor") or None
    error: str | None = None
    customers: list[Any] = []
    next_url: str | None = None
    try:
        customers, next_cursor = await service.search_customers(
            session, q, PageParams(cursor=cursor, limit=PAGE_SIZE)
        )
        if next_cursor:
            next_url = "/customers?" + urlencode({**({"q": q} if q else {}), "cursor": next_cursor})
    except InvalidCursor:
        error = _("This page link is no longer valid; search again")
    context = {
        "q": q,
        "customers": customers,
        "next_url": next_url,
        "error": error,
        "timezone": _business_zone(request),
    }
    return render(request, "customers/index.html", context, block="results")


def _lead_href(reference: str | None) -> str | None:
    if reference and reference.startswith("lead:") and _UUID.fullmatch(reference[5:]):
        return f"/leads/{reference[5:]}"
    return None


async def _card_page(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    customer_id: uuid.UUID,
    *,
    merge_error: str | None = None,
    merge_value: str = "",
    erase_error: str | None = None,
    edit_values: dict[str, str] | None = None,
    edit_errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    detail = await service.customer_detail(session, customer_id)
    timeline = [
        {
            "occurred_at": entry.occurred_at,
            "kind": entry.kind,
            "title": entry_title(entry.title, entry.data or {}),
            "href": _lead_href(entry.reference),
        }
        for entry in detail.timeline
    ]
    live = detail.card.merged_into_id is None and detail.card.erased_at is None
    context = {
        "customer": detail.info,
        "card": detail.card,
        "contacts": detail.contacts,
        "timeline": timeline,
        "can_edit": live and principal.has(CUSTOMERS_WRITE),
        "edit_values": edit_values or _edit_values(detail.info),
        "edit_errors": edit_errors or {},
        "can_merge": live and principal.has(CUSTOMERS_MERGE),
        "can_erase": live and principal.has(CUSTOMERS_ERASE),
        "merge_error": merge_error,
        "merge_value": merge_value,
        "erase_error": erase_error,
        "timezone": _business_zone(request),
    }
    return render(request, "customers/card.html", context, block="content", status_code=status_code)


@router.get("/customers/{customer_id}", response_class=HTMLResponse)
async def customer_page(
    request: Request,
    customer_id: uuid.UUID,
    session: ReadSession,
    principal: Principal = require(CUSTOMERS_READ),
) -> Response:
    return await _card_page(request, session, principal, customer_id)


def _edit_values(info: Any) -> dict[str, str]:
    return {
        "name": info.name or "",
        "phones": "\n".join(info.phones),
        "emails": "\n".join(info.emails),
    }


def _lines(value: str) -> list[str]:
    """One contact a line (commas and semicolons separate too); blank lines dropped."""
    return [part.strip() for part in re.split(r"[\n,;]", value) if part.strip()]


def _edit_errors(exc: ValidationFailed | Conflict) -> dict[str, str]:
    errors: dict[str, str] = {}
    for error in exc.errors:
        parts = error.field.split(".")
        name = parts[1] if len(parts) > 1 and parts[1] in EDIT_FIELDS else "__all__"
        wording = EDIT_MESSAGES.get(error.code)
        errors.setdefault(name, _(wording) if wording else error.message)
    if not errors:
        errors["__all__"] = _(exc.detail or exc.title)
    return errors


@router.post("/customers/{customer_id}/edit", response_class=HTMLResponse)
async def edit_form(
    request: Request,
    customer_id: uuid.UUID,
    session: WriteSession,
    principal: Principal = require(CUSTOMERS_WRITE),
) -> Response:
    """Name, phones and e-mails. An input the form sent empty clears it (no name, no phones, no
    e-mails); an input it did not send keeps what the card has."""
    form = await request.form()
    sent = {name: str(form.get(name) or "").strip()[:5000] for name in EDIT_FIELDS if name in form}
    changes: dict[str, Any] = {}
    if "name" in sent:
        changes["name"] = sent["name"] or None
    errors: dict[str, str] = {}
    status_code = 422
    for name in ("phones", "emails"):
        if name in sent:
            changes[name] = _lines(sent[name])
            if len(changes[name]) > MAX_CONTACTS_PER_REQUEST:
                errors[name] = _("At most %(count)s", count=MAX_CONTACTS_PER_REQUEST)
    if not errors:
        try:
            await update_customer(session, customer_id, changes, field_prefix="form")
        except (ValidationFailed, Conflict) as exc:
            errors, status_code = _edit_errors(exc), exc.status
    if errors:
        await session.rollback()
        detail = await service.customer_detail(session, customer_id)
        values = {**_edit_values(detail.info), **sent}
        return await _card_page(request, session, principal, customer_id, edit_values=values,
                                edit_errors=errors, status_code=status_code)  # fmt: skip
    return RedirectResponse(f"/customers/{customer_id}", status_code=303)


def _merge_message(exc: ValidationFailed | Conflict) -> str:
    code = exc.errors[0].code if exc.errors else ""
    if code == "same_card":
        return _("A card cannot be merged into itself")
    if code == "not_found":
        return _("There is no customer with this id")
    return _("These cards cannot be merged: one of them was merged or erased already")


@router.post("/customers/{customer_id}/merge", response_class=HTMLResponse)
async def merge_form(
    request: Request,
    customer_id: uuid.UUID,
    session: WriteSession,
    principal: Principal = require(CUSTOMERS_MERGE),
) -> Response:
    form = await request.form()
    raw = str(form.get("from_id") or "").strip()[:500]
    found = _UUID.search(raw)  # an id, or a pasted link to the other card's page
    if found is None:
        message = _("Enter the other card's id or paste a link to it")
        return await _card_page(request, session, principal, customer_id, merge_error=message,
                                merge_value=raw, status_code=422)  # fmt: skip
    try:
        await merge(session, customer_id, uuid.UUID(found.group()), field_prefix="form")
    except (ValidationFailed, Conflict) as exc:
        await session.rollback()
        return await _card_page(request, session, principal, customer_id,
                                merge_error=_merge_message(exc), merge_value=raw,
                                status_code=exc.status)  # fmt: skip
    return RedirectResponse(f"/customers/{customer_id}", status_code=303)


@router.post("/customers/{customer_id}/erase", response_class=HTMLResponse)
async def erase_form(
    request: Request,
    customer_id: uuid.UUID,
    session: WriteSession,
    principal: Principal = require(CUSTOMERS_ERASE),
) -> Response:
    form = await request.form()
    if form.get("confirm") != "yes":  # irreversible: never on a stray click
        message = _("Tick the box to confirm the erasure")
        return await _card_page(request, session, principal, customer_id, erase_error=message,
                                status_code=422)  # fmt: skip
    await erase_customer(session, customer_id)
    return RedirectResponse(f"/customers/{customer_id}", status_code=303)
