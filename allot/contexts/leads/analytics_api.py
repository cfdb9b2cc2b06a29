"""JSON API of the lead analytics (`GET /api/v1/lead-analytics`) and its CSV export
(`GET /api/v1/lead-analytics.csv?table=...`): both render the one report of analytics.py."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from allot.kernel.auth import Principal, require
from allot.kernel.web.routers import api_router
from allot.kernel.web.uow import ReadSession

from . import analytics, analytics_csv
from .access import viewer_for
from .analytics_schemas import LeadAnalytics
from .permissions import LEADS_READ

router = APIRouter()
report_router = api_router("/lead-analytics", "lead analytics")
csv_router = api_router("/lead-analytics.csv", "lead analytics")

CsvTable = Literal[
    "summary",
    "funnel",
    "conversion_by_source",
    "conversion_by_manager",
    "conversion_by_product",
    "conversion_by_week",
    "response_by_manager",
    "workload",
    "routing_by_manager",
]
assert set(CsvTable.__args__) == set(analytics_csv.TABLES)  # type: ignore[attr-defined]

DateFrom = Annotated[
    date | None,
    Query(alias="from", description="First day, YYYY-MM-DD (default: 29 days before `to`)"),
]
DateTo = Annotated[
    date | None,
    Query(alias="to", description="Last day, included (default: today, business time zone)"),
]
Source = Annotated[str | None, Query(max_length=64, description="Only leads of this source")]
Team = Annotated[
    str | None,
    Query(max_length=100, description="Only leads whose assignee (an agent) is in this team"),
]
DESCRIPTION = """Every figure of the lead analytics for the leads **created** in the period
(calendar days in the business time zone), followed up to now: the funnel by pipeline status
(a lead counts in every status it ever reached), conversion (won / all and won / closed) by
source, manager (current assignee), product and ISO week, time to first response (p50 and p90,
nearest rank, seconds), first-response SLA breaches, each manager's open leads at the end of
every day of the period (all leads, not only the period's), and what routing did with the
period's leads (offers accepted, declined, timed out, rescinded; leads reassigned and taken
back).

Shares are per cent rounded to one decimal, `null` when there is nothing to divide by.
Operators get only their own figures (`filters.own_only`); managers and analysts everyone's.
The page `/leads/analytics` and the CSV export show this same object. Definitions:
docs/analytics.md."""


async def _report(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    date_from: date | None,
    date_to: date | None,
    source: str | None,
    team: str | None,
) -> LeadAnalytics:
    zone = str(getattr(request.app.state.settings, "business_timezone", "Europe/Moscow"))
    period = analytics.resolve_period(date_from, date_to, zone, prefix="query")
    viewer = await viewer_for(session, principal)
    return await analytics.build_report(session, period, viewer, source=source, team=team)


@report_router.get(
    "",
    response_model=LeadAnalytics,
    summary="Lead analytics: funnel, conversion, first response, SLA, workload, routing",
    description=DESCRIPTION,
)
async def lead_analytics(
    request: Request,
    session: ReadSession,
    date_from: DateFrom = None,
    date_to: DateTo = None,
    source: Source = None,
    team: Team = None,
    principal: Principal = require(LEADS_READ),
) -> LeadAnalytics:
    return await _report(request, session, principal, date_from, date_to, source, team)


@csv_router.get(
    "",
    response_class=Response,
    summary="Lead analytics: one table as CSV",
    description="One table of `GET /api/v1/lead-analytics` (same filters, same figures) as a CSV "
    "file for Russian Excel: UTF-8 with BOM, `;` separator, decimal comma, a header row of the "
    "JSON field names. `summary` lists the single figures as `metric;value` lines; `workload` "
    "has one line per manager and day.",
    responses={200: {"description": "The table", "content": {"text/csv": {}}}},
)
async def lead_analytics_csv(
    request: Request,
    session: ReadSession,
    table: Annotated[CsvTable, Query(description="Which table of the report")],
    date_from: DateFrom = None,
    date_to: DateTo = None,
    source: Source = None,
    team: Team = None,
    principal: Principal = require(LEADS_READ),
) -> Response:
    report = await _report(request, session, principal, date_from, date_to, source, team)
    name = analytics_csv.file_name(report, table)
    return Response(
        content=analytics_csv.render(report, table),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


for sub in (report_router, csv_router):
    router.include_router(sub)
