"""The lead analytics as people and programs get it: the JSON API, the CSV files and the page,
through HTTP. They must show the same numbers for the same data; operators only their own."""

from __future__ import annotations

import csv
import io
from html.parser import HTMLParser
from typing import Any

import pytest

from tests.factories import auth_headers

from .helpers import caller, new_lead
from .test_analytics import START, scenario

HTML = {"Accept": "text/html"}
PERIOD = {"from": "2026-01-05", "to": "2026-01-13"}
CONVERSION_FIELDS = ("leads", "closed", "won", "won_pct", "won_of_closed_pct")
TABLE_FIELDS = {
    "funnel": ("reached", "reached_pct", "current"),
    "conversion_by_source": CONVERSION_FIELDS,
    "conversion_by_manager": CONVERSION_FIELDS,
    "conversion_by_product": CONVERSION_FIELDS,
    "conversion_by_week": CONVERSION_FIELDS,
    "response_by_manager": (
        "leads", "responded", "no_response", "p50_seconds", "p90_seconds", "sla_breached",
        "sla_breached_pct",
    ),
    "workload": ("average", "peak", "at_end"),
    "routing_by_manager": (
        "offered", "accepted", "declined", "timed_out", "rescinded", "pending", "unassigned",
    ),
}  # fmt: skip


@pytest.fixture
async def manager(database):
    return await caller(database, "manager", locale="ru")


def number(value: Any) -> Any:
    """A figure as the page (data-value), the JSON and the CSV (decimal comma) write it."""
    if value is None or value == "":
        return None
    try:
        return float(str(value).replace(",", "."))
    except ValueError:
        return str(value)


class Figures(HTMLParser):
    """data-field/data-value cells of the page, by data-table and row data-key (in order)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self.singles: dict[str, dict[str, Any]] = {}
        self.stack: list[str] = []
        self.row: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "data-table" in a:
            self.stack.append(str(a["data-table"]))
            self.tables.setdefault(self.stack[-1], [])
            self.singles.setdefault(self.stack[-1], {})
        elif tag in ("table", "div", "p") and self.stack:
            self.stack.append("")  # a nested element that closes before its table
        if tag == "tr" and "data-key" in a and self.stack:
            self.row = {}
            self.tables[self.stack[-1]].append((str(a["data-key"]), self.row))
        if "data-field" in a and self.stack:
            target = self.row if self.row is not None else self.singles[self.stack[-1]]
            target[str(a["data-field"])] = number(a.get("data-value"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self.row = None
        if tag in ("table", "div", "p") and self.stack:
            self.stack.pop()


def page_figures(html: str) -> Figures:
    parser = Figures()
    parser.feed(html)
    return parser


def read_csv(body: bytes) -> list[dict[str, str]]:
    assert body.startswith(b"\xef\xbb\xbf"), "no UTF-8 BOM"
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig")), delimiter=";"))


def api_rows(report: dict[str, Any], table: str) -> list[tuple[str, dict[str, Any]]]:
    if table == "response_by_manager":
        return [(r["agent_id"] or "none", r["figures"]) for r in report[table]]
    if table == "workload":
        return [(r["agent_id"], r) for r in report["workload"]]
    if table == "routing_by_manager":
        return [(r["agent_id"], r) for r in report["routing"]["by_agent"]]
    return [(r["key"], r) for r in report[table]]


def csv_key(row: dict[str, str]) -> str:
    return row.get("key") or row.get("agent_id") or "none"


async def test_page_api_and_csv_show_the_same_numbers(client, database, clock, manager):
    await scenario(database, clock)
    api = await client.get("/api/v1/lead-analytics", params=PERIOD, headers=manager)
    assert api.status_code == 200, api.text
    report = api.json()
    page = await client.get("/leads/analytics", params=PERIOD, headers={**manager, **HTML})
    assert page.status_code == 200
    shown = page_figures(page.text)
    compared = 0
    for table, fields in TABLE_FIELDS.items():
        from_api = [
            (key, {f: number(row[f]) for f in fields}) for key, row in api_rows(report, table)
        ]
        from_page = [
            (key, {f: row.get(f) for f in fields}) for key, row in shown.tables.get(table, [])
        ]
        assert from_page == from_api, table
        if table == "workload":
            continue  # one CSV line per manager and day: compared below
        exported = await client.get(
            "/api/v1/lead-analytics.csv", params={**PERIOD, "table": table}, headers=manager
        )
        assert exported.status_code == 200, exported.text
        from_csv = [
            (csv_key(r), {f: number(r[f]) for f in fields}) for r in read_csv(exported.content)
        ]
        assert from_csv == from_api, table
        compared += len(from_api)
    assert compared > 15  # the scenario fills the tables

    # The workload CSV: one line per manager and day, the same counts as the JSON series.
    lines = read_csv(
        (await client.get("/api/v1/lead-analytics.csv", params={**PERIOD, "table": "workload"},
                          headers=manager)).content
    )  # fmt: skip
    expected = [
        (series["agent_id"], day, count)
        for series in report["workload"]
        for day, count in zip(report["workload_days"], series["open_by_day"], strict=True)
    ]
    assert [(r["agent_id"], r["date"], int(r["open_leads"])) for r in lines] == expected

    # The single figures: page cards, the summary CSV and the JSON.
    summary = {r["metric"]: number(r["value"]) for r in read_csv(
        (await client.get("/api/v1/lead-analytics.csv", params={**PERIOD, "table": "summary"},
                          headers=manager)).content)}  # fmt: skip
    cards = shown.singles["summary"]
    for field in ("leads", "won", "won_pct", "won_of_closed_pct"):
        assert cards[field] == summary[field] == number(report["summary"][field]), field
    for field in ("p50_seconds", "p90_seconds", "no_response", "sla_breached", "sla_breached_pct"):
        name = f"response_{field}"
        assert cards[name] == summary[name] == number(report["response"][field]), field
    for field in ("offered", "accepted", "declined", "timed_out", "rescinded", "reassigned",
                  "unassigned", "never_assigned"):  # fmt: skip
        assert shown.singles["routing"][field] == summary[f"routing_{field}"], field
        assert summary[f"routing_{field}"] == number(report["routing"][field]), field


async def test_the_page_answers_which_source_converts_best_and_who_is_slowest(
    client, database, clock
):
    s = await scenario(database, clock)
    english = await caller(database, "analyst", locale="en")
    page = await client.get("/leads/analytics", params=PERIOD, headers={**english, **HTML})
    assert page.status_code == 200
    html = page.text
    assert "Best converting source: <strong>website</strong>" in html
    assert '<tr data-key="website" class="la-best">' in html
    report = (await client.get("/api/v1/lead-analytics", params=PERIOD, headers=english)).json()
    slowest = report["slowest_agent_id"]
    name = {str(s.anna.id): s.anna.name, str(s.boris.id): s.boris.name}[slowest]
    assert f"Slowest first response: <strong>{name}</strong>" in html
    assert f'<tr data-key="{slowest}" class="la-slow">' in html
    assert 'href="/leads/analytics"' in html  # in the navigation
    assert "/api/v1/lead-analytics.csv?from=2026-01-05&amp;to=2026-01-13&amp;table=funnel" in html
    assert "<progress" in html  # the funnel's bars
    fragment = await client.get(
        "/leads/analytics", params=PERIOD, headers={**english, **HTML, "HX-Request": "true"}
    )
    assert fragment.status_code == 200
    assert "<!doctype" not in fragment.text
    assert 'data-table="conversion_by_source"' in fragment.text


async def test_the_page_in_russian(client, database, clock, manager):
    await scenario(database, clock)
    html = (await client.get("/leads/analytics", params=PERIOD, headers={**manager, **HTML})).text
    assert "Аналитика по заявкам" in html
    assert "Лучшая конверсия у источника" in html
    assert "16,7\u00a0%" in html  # won of all, decimal comma


async def test_an_operator_gets_only_their_own_figures(client, database, clock):
    s = await scenario(database, clock)
    anna = await auth_headers(database, s.anna_user)
    mine = sum(p.assignee == s.anna.id for p in s.leads)
    own = (await client.get("/api/v1/lead-analytics", params=PERIOD, headers=anna)).json()
    assert own["filters"]["own_only"] is True
    assert own["filters"]["agent_id"] == str(s.anna.id)
    assert own["summary"]["leads"] == mine
    assert {r["key"] for r in own["conversion_by_manager"]} <= {str(s.anna.id)}
    # Asking for another team does not widen it.
    other = await client.get("/api/v1/lead-analytics", params={**PERIOD, "team": "south"},
                             headers=anna)  # fmt: skip
    assert other.json()["summary"]["leads"] == 0
    page = await client.get("/leads/analytics", params=PERIOD, headers={**anna, **HTML})
    assert page.status_code == 200
    assert "Только ваши показатели" in page.text
    assert s.boris.name not in page.text


async def test_the_team_and_source_filters_through_http(client, database, clock, manager):
    s = await scenario(database, clock)
    north = (await client.get("/api/v1/lead-analytics", params={**PERIOD, "team": "north"},
                              headers=manager)).json()  # fmt: skip
    assert north["summary"]["leads"] == sum(p.assignee == s.anna.id for p in s.leads)
    partner = (await client.get("/api/v1/lead-analytics", params={**PERIOD, "source": "partner"},
                                headers=manager)).json()  # fmt: skip
    assert partner["summary"]["leads"] == 3
    page = await client.get("/leads/analytics", params={**PERIOD, "team": "north"},
                            headers={**manager, **HTML})  # fmt: skip
    assert '<option value="north" selected>' in page.text


async def test_csv_format_for_russian_excel(client, database, clock, manager):
    await scenario(database, clock)
    await new_lead(database, source="website", attributes={"product": "=HYPERLINK(1)"})
    response = await client.get(
        "/api/v1/lead-analytics.csv", params={**PERIOD, "table": "conversion_by_product"},
        headers=manager,
    )  # fmt: skip
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == (
        'attachment; filename="lead-analytics-conversion_by_product-2026-01-05-2026-01-13.csv"'
    )
    body = response.content
    assert body.startswith(b"\xef\xbb\xbfkey;label;leads;closed;won;won_pct;won_of_closed_pct\r\n")
    text = body.decode("utf-8-sig")
    assert "product:Payday;Payday;1;1;0;0,0;0,0\r\n" in text  # decimal comma
    assert "Сумма 10 000–30 000 ₽" in text  # labels in the caller's language
    assert ";'=HYPERLINK(1);" in text  # never a formula in Excel


async def test_an_empty_period(client, database, clock, manager):
    clock.set(START)
    response = await client.get("/api/v1/lead-analytics", headers=manager)
    assert response.status_code == 200
    report = response.json()
    assert (report["period"]["from"], report["period"]["to"]) == ("2025-12-07", "2026-01-05")
    assert report["summary"] == {
        "leads": 0, "open": 0, "closed": 0, "won": 0, "won_pct": None, "won_of_closed_pct": None,
    }  # fmt: skip
    exported = await client.get(
        "/api/v1/lead-analytics.csv", params={"table": "conversion_by_source"}, headers=manager
    )
    assert (
        exported.content == b"\xef\xbb\xbfkey;label;leads;closed;won;won_pct;won_of_closed_pct\r\n"
    )
    page = await client.get("/leads/analytics", headers={**manager, **HTML})
    assert page.status_code == 200
    assert "Нет заявок за этот период." in page.text


async def test_bad_filters_are_422_naming_the_field(client, database, clock, manager):
    cases = [
        ("/api/v1/lead-analytics", {"from": "2026-01-10", "to": "2026-01-01"}, "query.to"),
        ("/api/v1/lead-analytics", {"from": "2025-01-01", "to": "2026-01-10"}, "query.to"),
        ("/api/v1/lead-analytics", {"from": "yesterday"}, "query.from"),
        ("/api/v1/lead-analytics.csv", {}, "query.table"),
        ("/api/v1/lead-analytics.csv", {"table": "everything"}, "query.table"),
    ]
    for path, params, field in cases:
        response = await client.get(path, params=params, headers=manager)
        assert response.status_code == 422, (path, params)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert field in [e["field"] for e in response.json()["errors"]], (path, params)
    page = await client.get("/leads/analytics", params={"from": "2026-01-10", "to": "2026-01-01"},
                            headers={**manager, **HTML})  # fmt: skip
    assert page.status_code == 200
    assert 'aria-invalid="true"' in page.text


async def test_who_may_see_the_analytics(client, database, clock):
    assert (await client.get("/api/v1/lead-analytics")).status_code == 401
    partner = await caller(database, "partner")
    assert (await client.get("/api/v1/lead-analytics", headers=partner)).status_code == 403
    assert (await client.get("/leads/analytics", headers={**partner, **HTML})).status_code == 403
    for role in ("manager", "analyst", "operator"):
        headers = await caller(database, role)
        assert (await client.get("/api/v1/lead-analytics", headers=headers)).status_code == 200


async def test_openapi_documents_the_endpoints_and_fields(client):
    spec = (await client.get("/api/v1/openapi.json")).json()
    report = spec["paths"]["/api/v1/lead-analytics"]["get"]
    assert report["summary"].startswith("Lead analytics")
    assert "created" in report["description"]
    assert {p["name"] for p in report["parameters"]} >= {"from", "to", "source", "team"}
    exported = spec["paths"]["/api/v1/lead-analytics.csv"]["get"]
    assert "text/csv" in exported["responses"]["200"]["content"]
    schemas = spec["components"]["schemas"]
    assert schemas["ResponseFigures"]["properties"]["p50_seconds"]["description"]
    assert schemas["FunnelStage"]["properties"]["reached"]["description"]
