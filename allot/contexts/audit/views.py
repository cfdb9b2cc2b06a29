"""Audit pages: the searchable trail (htmx re-renders only the results) and one entry's diff.

Form values come in as text and are checked here rather than by FastAPI, so a mistyped date
shows a message next to the form instead of an error page.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from starlette.responses import Response

from allot.kernel.auth import Principal, require
from allot.kernel.errors import InvalidCursor
from allot.kernel.i18n import gettext as _
from allot.kernel.pagination import PageParams
from allot.kernel.web.routers import view_router
from allot.kernel.web.templating import render
from allot.kernel.web.uow import ReadSession

from . import AUDIT_READ, service
from .models import AuditEntry
from .repository import AuditFilter

router = view_router()

PAGE_SIZE = 50
FORM_FIELDS = ("object_type", "object_id", "user", "action", "from", "to")


@dataclass
class ParsedForm:
    filters: AuditFilter
    errors: dict[str, str] = field(default_factory=dict)


def _business_zone(request: Request) -> str:
    return str(getattr(request.app.state.settings, "business_timezone", "Europe/Moscow"))


def _parse_moment(text: str, zone: str) -> datetime:
    """`datetime-local` input (business time zone) or full ISO 8601 with an offset."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    return moment.astimezone(UTC)


def _as_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:  # not an id: a label (the e-mail the user had when acting)
        return None


def _parse_form(form: dict[str, str], zone: str) -> ParsedForm:
    errors: dict[str, str] = {}
    moments: dict[str, datetime | None] = {"from": None, "to": None}
    for name in moments:
        if form[name]:
            try:
                moments[name] = _parse_moment(form[name], zone)
            except (ValueError, OverflowError):  # OverflowError: year 1 shifted out of range
                errors[name] = _("Enter a date and time, e.g. 2026-01-05 09:00")
    since, until = moments["from"], moments["to"]
    if since and until and until < since:
        errors["to"] = _("The end is earlier than the start")
    user = form["user"]
    actor_id = _as_uuid(user)
    filters = AuditFilter(
        object_type=form["object_type"] or None,
        object_id=form["object_id"] or None,
        actor_id=actor_id,
        actor_label=user if user and actor_id is None else None,
        action=form["action"] or None,
        since=since,
        until=until,
    )
    return ParsedForm(filters, errors)


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(
    request: Request, session: ReadSession, _principal: Principal = require(AUDIT_READ)
) -> Response:
    form = {name: request.query_params.get(name, "").strip() for name in FORM_FIELDS}
    parsed = _parse_form(form, _business_zone(request))
    cursor = request.query_params.get("cursor") or None
    entries: list[AuditEntry] = []
    next_url: str | None = None
    if not parsed.errors:
        try:
            rows, next_cursor = await service.search(
                session, parsed.filters, PageParams(cursor=cursor, limit=PAGE_SIZE)
            )
            entries = list(rows)
            if next_cursor:
                query = {k: v for k, v in form.items() if v}
                next_url = "/audit?" + urlencode({**query, "cursor": next_cursor})
        except InvalidCursor:
            parsed.errors["cursor"] = _("This page link is no longer valid; search again")
    context = {
        "form": form,
        "errors": parsed.errors,
        "entries": entries,
        "next_url": next_url,
        "timezone": _business_zone(request),
    }
    return render(request, "audit/index.html", context, block="results")


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


@router.get("/audit/entries/{entry_id}", response_class=HTMLResponse)
async def audit_entry_page(
    request: Request,
    entry_id: uuid.UUID,
    session: ReadSession,
    _principal: Principal = require(AUDIT_READ),
) -> Response:
    entry = await service.get_entry(session, entry_id)
    before, after = entry.before or {}, entry.after or {}
    diff = [
        {
            "field": name,
            "before": _shown(before.get(name)),
            "after": _shown(after.get(name)),
            "personal": name in (entry.personal_fields or []),
        }
        for name in entry.changed_fields or []
    ]
    context = {
        "entry": entry,
        "diff": diff,
        "timezone": _business_zone(request),
    }
    return render(request, "audit/entry.html", context, block="content")
