"""The demo's recorded past is one the product can stand on: the what-if simulator replays it
exactly under the rules that really applied, a big-loans rule visibly changes who would have got
what, and the lead analytics answer "which source converts best and who answers slowest"
(issue 4's walkthrough)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from allot.cli.demo import AGENTS, BIG_LOANS_QUEUE, LOANS_QUEUE, USERS
from allot.cli.demo_history import BUSINESS_ZONE, HABITS, WIN_SHARE
from allot.contexts.leads import analytics
from allot.contexts.leads.access import SYSTEM
from allot.kernel.db.engine import Database
from tests.cli.conftest import Invoke

from .test_demo_floor import _rows

BIG_LOAN_MINOR = 300_000 * 100
BIG_LOANS_RULES = {
    "filters": [
        {"name": "big", "when": f"amount_minor >= {BIG_LOAN_MINOR}", "queue": BIG_LOANS_QUEUE.name},
        {"name": "rest", "queue": LOANS_QUEUE.name},
    ]
}


def _last_week() -> tuple[str, str]:
    today = datetime.now(ZoneInfo(str(BUSINESS_ZONE))).date()
    return str(today - timedelta(days=7)), str(today - timedelta(days=1))


def _simulate(cli: Invoke, *options: str) -> dict:
    first, last = _last_week()
    result = cli("routing", "simulate", "--from", first, "--to", last, "--json", *options)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{") :])


def test_the_recorded_week_replays_exactly_under_the_rules_that_applied(
    cli: Invoke, demo_url: str
) -> None:
    report = _simulate(cli)

    assert len(report["items"]) >= 60  # a week of applications, not a handful
    assert report["changed_items"] == 0
    assert all(i["recorded"] == i["simulated"] for i in report["items"].values())


def test_a_big_loans_rule_moves_big_loans_to_the_operators_who_have_the_skill(
    cli: Invoke, demo_url: str, tmp_path: Path
) -> None:
    rules = tmp_path / "big-loans.json"
    rules.write_text(json.dumps(BIG_LOANS_RULES))

    report = _simulate(cli, "--rules", str(rules))

    email = {
        uuid.UUID(str(k)): v for k, v in _rows(demo_url, "SELECT id, email FROM routing_agents")
    }
    skilled = {a.email for a in AGENTS if "big_loans" in a.skills}
    big = {
        uuid.UUID(str(item_id))
        for item_id, attributes in _rows(demo_url, "SELECT id, attributes FROM routing_work_items")
        if json.loads(attributes).get("amount_minor", 0) >= BIG_LOAN_MINOR
    }
    simulated_big = [
        {side: email[uuid.UUID(agent)] if agent else None for side, agent in owners.items()}
        for item_id, owners in report["items"].items()
        if uuid.UUID(item_id) in big
    ]
    assert simulated_big, "the recorded week has big loans"

    # A big loan may still wait at the end of the period (None); it never goes to the unskilled.
    assert {owners["simulated"] for owners in simulated_big} - {None} <= skilled
    # Big loans that really went to an operator without the skill go elsewhere under the rule.
    # (The seeded history gives Гульнара, who lacks it, about a third of them; whether any fall
    # in the period depends on the hour the demo was loaded, so this is not assumed.)
    moved = [owners for owners in simulated_big if owners["recorded"] not in skilled]
    assert all(owners["simulated"] != owners["recorded"] for owners in moved)
    assert report["changed_items"] >= len(moved)


def test_analytics_name_the_best_converting_source_and_the_slowest_to_answer(
    demo_url: str,
) -> None:
    async def report() -> Any:
        database = Database(demo_url)
        try:
            async with database.reader() as session:
                first, last = _last_week()
                period = analytics.resolve_period(
                    datetime.fromisoformat(first).date(),
                    datetime.fromisoformat(last).date(),
                    str(BUSINESS_ZONE),
                )
                return await analytics.build_report(session, period, SYSTEM)
        finally:
            await database.dispose()

    figures = asyncio.run(report())

    assert figures.best_source == max(WIN_SHARE, key=WIN_SHARE.__getitem__)
    slowest_email = max(HABITS, key=lambda e: sum(HABITS[e].first_response_minutes))
    slowest_name = next(user.name for user in USERS if user.email == slowest_email)
    assert figures.response_by_manager[0].name == slowest_name
