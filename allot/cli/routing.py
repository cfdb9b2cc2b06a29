"""`allot routing simulate`: what would have happened over a period under other rules, next to
what did (routing/simulator.py; docs/routing-simulator.md). Reads only; writes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer

from allot.cli.runtime import (
    console,
    fail,
    load_settings,
    print_rows,
    require_current_schema,
    run,
    user_errors,
)
from allot.kernel.db.engine import Database

routing_app = typer.Typer(help="Routing.", no_args_is_help=True)


@routing_app.command("simulate")
def simulate(
    start: Annotated[
        str, typer.Option("--from", help="First day, YYYY-MM-DD (business time zone)")
    ],
    end: Annotated[str, typer.Option("--to", help="Last day, YYYY-MM-DD, included")],
    rules: Annotated[
        Path | None, typer.Option(help="JSON file with a rule set definition to try")
    ] = None,
    rule_set: Annotated[
        int | None, typer.Option(help="A saved rule set version to try, instead of --rules")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for the answers drawn for new offers")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Replay the recorded intake, availability, offer answers and handling times of a period
    against a rule set (--rules FILE or --rule-set VERSION; neither: the rules that really
    applied) and print the distribution per agent, waits, SLA breaches and fair share next to
    what really happened. Deterministic for a given seed. Date-times (ISO 8601) are accepted
    too; then --to is excluded."""
    from allot.app import load_contexts
    from allot.contexts.routing import simulation_history as history
    from allot.contexts.routing.simulation_report import simulate_period

    if rules is not None and rule_set is not None:
        with user_errors():
            fail("give --rules or --rule-set, not both")
    settings = load_settings()
    rules_text = ""
    if rules is not None:
        with user_errors():
            try:
                rules_text = rules.read_text(encoding="utf-8")
            except OSError as exc:
                fail(f"cannot read {rules}: {exc.strerror or exc}")
    require_current_schema(settings)
    load_contexts()

    async def work() -> Any:
        database = Database(settings.resolved_database_url, pool_size=1, read_pool_size=1)
        try:
            async with database.reader() as session:
                zone = ZoneInfo(settings.business_timezone)
                first, last = history.period_bounds(start, end, zone, field="period")
                tried: Any = history.RECORDED
                if rules is not None:
                    tried = await history.rules_from_json(session, rules_text)
                elif rule_set is not None:
                    tried = await history.rules_by_version(session, rule_set)
                label = rules.name if rules is not None else None
                return await simulate_period(
                    session, start=first, end=last, rules=tried, seed=seed, label=label
                )
        finally:
            await database.dispose()

    report = run(work())
    if as_json:
        typer.echo(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
        return
    _print(report)


def _print(report: Any) -> None:
    console.print(
        f"Period {report.start.isoformat()} – {report.end.isoformat()}, rules: {report.rules}, "
        f"seed {report.seed}"
    )
    print_rows(
        ["Agent", "Recorded", "Simulated", "Change", "Recorded share", "Simulated share"],
        [
            [
                a.name,
                str(a.recorded),
                str(a.simulated),
                f"{a.change:+d}",
                f"{a.recorded_share:.0%}",
                f"{a.simulated_share:.0%}",
            ]
            for a in report.agents
        ],
    )
    rows = []
    for label, pick in _MEASURES:
        rows.append([label, pick(report.recorded), pick(report.simulated)])
    for queue_id, name in report.queues.items():
        rows.append(
            [
                f"Fair share, largest deviation: {name}",
                _percent(report.recorded.fairness.get(queue_id)),
                _percent(report.simulated.fairness.get(queue_id)),
            ]
        )
    print_rows(["Measure", "Recorded", "Simulated"], rows)
    console.print(f"Items with another owner: {report.changed_items} of {len(report.owners)}")


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    rest, parts = int(value), []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        amount, rest = divmod(rest, size)
        if amount:
            parts.append(f"{amount} {unit}")
    return " ".join(parts) or "0 s"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


_MEASURES: list[tuple[str, Any]] = [
    ("Assignments", lambda s: str(s.assignments)),
    ("Items arrived", lambda s: str(s.waits.arrived)),
    ("Assigned", lambda s: str(s.waits.assigned)),
    ("Still waiting at the end", lambda s: str(s.waits.still_waiting)),
    ("Closed before assignment", lambda s: str(s.waits.closed_unassigned)),
    ("Wait p50", lambda s: _seconds(s.waits.p50)),
    ("Wait p90", lambda s: _seconds(s.waits.p90)),
    ("First-response SLA: items", lambda s: str(s.sla_items)),
    ("First-response SLA: breached", lambda s: str(s.sla_breached)),
    ("Expired", lambda s: str(s.expired)),
    ("Offers accepted", lambda s: str(s.offers.get("accepted", 0))),
    ("Offers declined", lambda s: str(s.offers.get("declined", 0))),
    ("Offers timed out", lambda s: str(s.offers.get("timed_out", 0))),
]
