"""The lead analytics page (`/leads/analytics`): the report of analytics.py as tables, sorted so
that the best converting source and the slowest first response stand out, each with a link to
its CSV (the API's export, same figures)."""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import urlencode

from babel.numbers import format_decimal
from fastapi import Request
from starlette.responses import Response

from allot.kernel.auth import Principal, require
from allot.kernel.errors import ValidationFailed
from allot.kernel.i18n import gettext as _
from allot.kernel.i18n import locale_var
from allot.kernel.web.routers import view_router
from allot.kernel.web.templating import render
from allot.kernel.web.uow import ReadSession

from . import analytics
from .access import viewer_for
from .analytics_csv import TABLES
from .permissions import LEADS_READ

router = view_router()

FIELDS = ("from", "to", "source", "team")


def percent(value: float | None) -> str:
    """12,3 % (12.3% in English); a dash for no value."""
    if value is None:
        return "—"
    number = format_decimal(value, format="0.0", locale=locale_var.get())
    return f"{number}\u00a0%" if locale_var.get() == "ru" else f"{number}%"


def decimal(value: float | None) -> str:
    """4,5 (4.5 in English): one decimal."""
    if value is None:
        return "—"
    return str(format_decimal(value, format="0.0", locale=locale_var.get()))


def duration(seconds: int | None) -> str:
    """1:05 or 2:03:04 (hours:minutes:seconds); a dash for none."""
    if seconds is None:
        return "—"
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _date(text: str) -> date | None:
    return date.fromisoformat(text) if text else None


@router.get("/leads/analytics")
async def analytics_page(
    request: Request, session: ReadSession, principal: Principal = require(LEADS_READ)
) -> Response:
    form = {name: request.query_params.get(name, "").strip() for name in FIELDS}
    zone = str(getattr(request.app.state.settings, "business_timezone", "Europe/Moscow"))
    errors: dict[str, str] = {}
    bounds: dict[str, date | None] = {}
    for name in ("from", "to"):
        try:
            bounds[name] = _date(form[name])
        except ValueError:
            errors[name] = _("Enter a date, e.g. 2026-01-05")
    report = None
    period = None
    if not errors:
        try:
            period = analytics.resolve_period(bounds["from"], bounds["to"], zone, prefix="form")
        except ValidationFailed as exc:
            errors["to"] = _(exc.errors[0].message)
    if period is not None:
        viewer = await viewer_for(session, principal)
        report = await analytics.build_report(
            session, period, viewer, source=form["source"], team=form["team"]
        )
        form.update({"from": str(period.date_from), "to": str(period.date_to)})
    suggestions = period or analytics.resolve_period(None, None, zone)
    filled = {k: v for k, v in form.items() if v}
    context: dict[str, Any] = {
        "form": form,
        "errors": errors,
        "report": report,
        "sources": await analytics.source_suggestions(session, suggestions),
        "teams": await analytics.team_suggestions(session),
        "csv": {
            table: "/api/v1/lead-analytics.csv?" + urlencode({**filled, "table": table})
            for table in TABLES
        },
        "percent": percent,
        "decimal": decimal,
        "duration": duration,
        "timezone": zone,
    }
    return render(request, "leads/analytics.html", context, block="content")
