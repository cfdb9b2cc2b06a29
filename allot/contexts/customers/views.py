"""Customer pages: the search list (htmx re-renders only the results) and the card with its
contacts, consent, source and timeline, plus the merge and erase forms.

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
from allot.kernel.i18n import gettext as _
from allot.kernel.pagination import PageParams
from allot.kernel.web.routers import view_router
from allot.kernel.web.templating import render
from allot.kernel.web.uow import ReadSession, WriteSession

from . import CUSTOMERS_ERASE, CUSTOMERS_MERGE, CUSTOMERS_READ, service
from .lifecycle import erase_customer, merge
from .timeline import entry_title

router = view_router()

PAGE_SIZE = 50
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
