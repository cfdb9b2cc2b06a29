"""CSV export of the lead analytics: one table of the report per file, as Russian Excel opens it
by a double click: UTF-8 with a BOM, `;` between fields, a decimal comma, CRLF line ends, and a
header row of the report's own field names (the same as in the JSON answer).

Every cell comes from the `LeadAnalytics` object the page and the API show; nothing is computed
here except the layout."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from .analytics_schemas import ConversionRow, LeadAnalytics, ResponseFigures

BOM = "\ufeff"
DELIMITER = ";"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # Excel would run such a cell as a formula

Rows = tuple[list[str], list[list[Any]]]
CONVERSION_COLUMNS = ["key", "label", "leads", "closed", "won", "won_pct", "won_of_closed_pct"]
RESPONSE_COLUMNS = [
    "leads", "responded", "no_response", "p50_seconds", "p90_seconds", "sla_met",
    "sla_breached", "sla_pending", "sla_breached_pct",
]  # fmt: skip


def _conversion(rows: list[ConversionRow]) -> Rows:
    return CONVERSION_COLUMNS, [[getattr(r, c) for c in CONVERSION_COLUMNS] for r in rows]


def _response(figures: ResponseFigures) -> list[Any]:
    return [getattr(figures, c) for c in RESPONSE_COLUMNS]


def summary(report: LeadAnalytics) -> Rows:
    values: list[tuple[str, Any]] = [
        ("from", report.period.date_from),
        ("to", report.period.date_to),
        ("timezone", report.period.timezone),
        ("source", report.filters.source),
        ("team", report.filters.team),
        *report.summary.model_dump().items(),
        *((f"response_{k}", v) for k, v in report.response.model_dump().items() if k != "leads"),
        *(
            (f"routing_{k}", v)
            for k, v in report.routing.model_dump().items()
            if k not in ("by_agent", "unassigned_by_reason")
        ),
        *((f"routing_unassigned_{k}", v) for k, v in report.routing.unassigned_by_reason.items()),
        ("best_source", report.best_source),
        ("slowest_agent_id", report.slowest_agent_id),
    ]
    return ["metric", "value"], [[name, value] for name, value in values]


def funnel(report: LeadAnalytics) -> Rows:
    columns = ["key", "label", "reached", "reached_pct", "current"]
    return columns, [[getattr(s, c) for c in columns] for s in report.funnel]


def response_by_manager(report: LeadAnalytics) -> Rows:
    columns = ["agent_id", "name", *RESPONSE_COLUMNS]
    rows = [[r.agent_id, r.name, *_response(r.figures)] for r in report.response_by_manager]
    return columns, rows


def workload(report: LeadAnalytics) -> Rows:
    columns = ["date", "agent_id", "name", "open_leads"]
    rows = [
        [day, series.agent_id, series.name, count]
        for series in report.workload
        for day, count in zip(report.workload_days, series.open_by_day, strict=True)
    ]
    return columns, rows


def routing_by_manager(report: LeadAnalytics) -> Rows:
    columns = [
        "agent_id", "name", "offered", "accepted", "declined", "timed_out", "rescinded",
        "pending", "unassigned",
    ]  # fmt: skip
    return columns, [[getattr(r, c) for c in columns] for r in report.routing.by_agent]


TABLES: dict[str, Callable[[LeadAnalytics], Rows]] = {
    "summary": summary,
    "funnel": funnel,
    "conversion_by_source": lambda r: _conversion(r.conversion_by_source),
    "conversion_by_manager": lambda r: _conversion(r.conversion_by_manager),
    "conversion_by_product": lambda r: _conversion(r.conversion_by_product),
    "conversion_by_week": lambda r: _conversion(r.conversion_by_week),
    "response_by_manager": response_by_manager,
    "workload": workload,
    "routing_by_manager": routing_by_manager,
}


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:.1f}".replace(".", ",")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date | uuid.UUID):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def render(report: LeadAnalytics, table: str) -> bytes:
    columns, rows = TABLES[table](report)
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=DELIMITER, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows([cell(value) for value in row] for row in rows)
    return (BOM + buffer.getvalue()).encode("utf-8")


def file_name(report: LeadAnalytics, table: str) -> str:
    period = report.period
    return f"lead-analytics-{table}-{period.date_from}-{period.date_to}.csv"
