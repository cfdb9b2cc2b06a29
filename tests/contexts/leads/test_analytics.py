"""Lead analytics figures, from data made through the real services (intake, status changes,
routing's timers and events, the clock moved): every expected number is worked out here from the
scenario itself, never by asking the analytics code."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from allot.contexts.leads import analytics
from allot.contexts.leads.access import SYSTEM, Viewer
from allot.contexts.leads.models import Lead
from allot.contexts.routing.models import Queue
from allot.kernel.errors import ValidationFailed
from allot.kernel.events import Dispatcher
from allot.kernel.timers import TimerRunner
from tests.conftest import count_queries
from tests.contexts.routing.helpers import make_agent, make_queue
from tests.factories import make_user

from .helpers import move, new_lead

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # a Monday, 12:00 in Moscow
ZONE = "Europe/Moscow"
SLA = timedelta(seconds=900)  # the default first-response time
PERIOD = analytics.Period(date(2026, 1, 5), date(2026, 1, 13), ZONE)


@dataclass
class Planned:
    """One lead of the scenario and what the test did to it."""

    lead: Any
    source: str
    product: str
    created: datetime
    responded: datetime | None = None
    closed: datetime | None = None
    status: str = "new"
    reached: list[str] = field(default_factory=lambda: ["new"])

    @property
    def assignee(self) -> uuid.UUID | None:
        return self.lead.assignee_id


@dataclass
class Scenario:
    anna: Any
    boris: Any
    anna_user: Any
    leads: list[Planned]  # created in PERIOD
    before: Planned  # created before it, still open


async def _take(database, clock, source: str, product: str, **fields: Any) -> Planned:
    lead = await new_lead(database, source=source, **fields)
    return Planned(lead=lead, source=source, product=product, created=clock.now())


async def _move(database, clock, planned: Planned, *statuses: str) -> None:
    for status in statuses:
        await move(database, planned.lead.id, status)
        planned.responded = planned.responded or clock.now()
        planned.reached.append(status)
        planned.status = status
        if status in ("won", "lost"):
            planned.closed = clock.now()


async def scenario(database, clock) -> Scenario:
    """Two managers (Anna, an operator in team north; Boris in team south), one lead from
    before the period, four leads in ISO week 2026-W02 and two in W03, worked as follows."""
    await make_queue(database)
    anna_user = await make_user(database, roles=("operator",))
    anna = await make_agent(
        database, name="Анна", capacity=10, teams=["north"], email=anna_user.email
    )
    boris = await make_agent(database, name="Борис", capacity=10, teams=["south"])
    clock.set(START - timedelta(days=10))
    before = await _take(database, clock, "website", "amount:none")
    clock.set(START)
    l1 = await _take(database, clock, "website", "amount:10k_30k", amount_minor=1_500_000)
    l2 = await _take(
        database, clock, "website", "product:Payday", amount_minor=5_000_000,
        attributes={"product": "Payday"},
    )  # fmt: skip
    l3 = await _take(database, clock, "partner", "amount:30k_100k", amount_minor=5_000_000)
    l4 = await _take(database, clock, "partner", "amount:none")
    clock.set(START + timedelta(seconds=300))
    await _move(database, clock, l1, "in_progress")
    clock.set(START + timedelta(seconds=600))
    await _move(database, clock, l3, "in_progress")
    clock.set(START + timedelta(seconds=1200))
    await _move(database, clock, l2, "lost")  # answered late: the SLA is breached
    clock.set(START + timedelta(days=1))
    await _move(database, clock, l1, "qualified", "won")
    await _move(database, clock, l3, "lost")
    clock.set(datetime(2026, 1, 12, 11, 0, tzinfo=UTC))
    l5 = await _take(database, clock, "website", "amount:500k_plus", amount_minor=60_000_000)
    clock.advance(60)
    await _move(database, clock, l5, "in_progress")
    clock.set(datetime(2026, 1, 13, 9, 55, tzinfo=UTC))
    l6 = await _take(database, clock, "partner", "amount:under_10k", amount_minor=100_000)
    clock.set(datetime(2026, 1, 13, 10, 0, tzinfo=UTC))  # l6's deadline is still ahead
    return Scenario(anna, boris, anna_user, [l1, l2, l3, l4, l5, l6], before)


async def report(database, viewer: Viewer = SYSTEM, period=PERIOD, **filters: Any):
    async with database.reader() as session:
        return await analytics.build_report(session, period, viewer, **filters)


# -- independent arithmetic -------------------------------------------------------------------
def share(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def nearest_rank(values: list[int], p: int) -> int | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[math.ceil(p / 100 * len(ordered)) - 1]


def response_seconds(leads: list[Planned]) -> list[int]:
    return [int((p.responded - p.created).total_seconds()) for p in leads if p.responded]


def sla_counts(leads: list[Planned], now: datetime) -> tuple[int, int, int]:
    met = breached = pending = 0
    for p in leads:
        due = p.created + SLA
        if p.responded is not None:
            met, breached = (met + 1, breached) if p.responded <= due else (met, breached + 1)
        elif now > due:
            breached += 1
        else:
            pending += 1
    return met, breached, pending


def conversion(leads: list[Planned]) -> tuple[int, int, int]:
    closed = sum(p.status in ("won", "lost") for p in leads)
    return len(leads), closed, sum(p.status == "won" for p in leads)


def open_at(leads: list[Planned], agent_id: uuid.UUID, moment: datetime) -> int:
    return sum(
        p.assignee == agent_id and p.created < moment and (p.closed is None or p.closed >= moment)
        for p in leads
    )


def day_ends(period: analytics.Period) -> list[datetime]:
    zone = ZoneInfo(period.zone)
    return [
        datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=zone)
        for day in period.days
    ]


def rows_by_key(rows) -> dict[str, Any]:
    return {row.key: row for row in rows}


# -- the figures ------------------------------------------------------------------------------
async def test_funnel_counts_every_status_a_lead_ever_reached(database, clock):
    s = await scenario(database, clock)
    result = await report(database)
    assert result.summary.leads == len(s.leads) == 6
    stages = {stage.key: stage for stage in result.funnel}
    assert [stage.key for stage in result.funnel] == [
        "new", "in_progress", "qualified", "won", "lost",
    ]  # fmt: skip
    for key, stage in stages.items():
        reached = sum(key in p.reached for p in s.leads)
        assert stage.reached == reached, key
        assert stage.reached_pct == share(reached, 6)
        assert stage.current == sum(p.status == key for p in s.leads)
    # The lead lost straight from "new" never was in progress; the won one passed through all.
    assert (stages["new"].reached, stages["in_progress"].reached) == (6, 3)
    assert (stages["qualified"].reached, stages["won"].reached, stages["lost"].reached) == (1, 1, 2)


async def test_conversion_by_source_product_week_and_manager(database, clock):
    s = await scenario(database, clock)
    result = await report(database)
    leads, closed, won = conversion(s.leads)
    summary = result.summary
    assert (summary.leads, summary.closed, summary.won, summary.open) == (
        leads, closed, won, leads - closed,
    )  # fmt: skip
    assert (summary.won_pct, summary.won_of_closed_pct) == (share(won, leads), share(won, closed))
    assert (summary.won_pct, summary.won_of_closed_pct) == (16.7, 33.3)

    by_source = rows_by_key(result.conversion_by_source)
    for source in ("website", "partner"):
        n, c, w = conversion([p for p in s.leads if p.source == source])
        row = by_source[source]
        assert (row.leads, row.closed, row.won) == (n, c, w)
        assert (row.won_pct, row.won_of_closed_pct) == (share(w, n), share(w, c))
    assert [r.key for r in result.conversion_by_source] == ["website", "partner"]  # best first
    assert result.best_source == "website"

    by_product = rows_by_key(result.conversion_by_product)
    assert set(by_product) == {p.product for p in s.leads}
    for planned in s.leads:
        assert by_product[planned.product].leads == 1
    assert by_product["product:Payday"].label == "Payday"  # the attribute wins over the amount

    weeks = result.conversion_by_week
    assert [(w.key, w.starts_on, w.ends_on) for w in weeks] == [
        ("2026-W02", date(2026, 1, 5), date(2026, 1, 11)),
        ("2026-W03", date(2026, 1, 12), date(2026, 1, 13)),
    ]
    week_one = [p for p in s.leads if p.created < datetime(2026, 1, 11, 21, tzinfo=UTC)]
    assert (weeks[0].leads, weeks[0].closed, weeks[0].won) == conversion(week_one)
    assert (weeks[1].leads, weeks[1].closed, weeks[1].won) == (2, 0, 0)

    by_manager = rows_by_key(result.conversion_by_manager)
    for agent in (s.anna, s.boris):
        mine = [p for p in s.leads if p.assignee == agent.id]
        row = by_manager[str(agent.id)]
        assert (row.leads, row.closed, row.won) == conversion(mine)
        assert row.label == agent.name


async def test_first_response_percentiles_and_sla_breaches(database, clock):
    s = await scenario(database, clock)
    result = await report(database)
    seconds = response_seconds(s.leads)
    assert sorted(seconds) == [60, 300, 600, 1200]
    figures = result.response
    assert (figures.responded, figures.no_response) == (4, 2)
    assert (figures.p50_seconds, figures.p90_seconds) == (300, 1200)
    assert figures.p50_seconds == nearest_rank(seconds, 50)
    met, breached, pending = sla_counts(s.leads, clock.now())
    assert (figures.sla_met, figures.sla_breached, figures.sla_pending) == (3, 2, 1)
    assert (met, breached, pending) == (3, 2, 1)
    assert figures.sla_breached_pct == share(breached, met + breached) == 40.0

    for row in result.response_by_manager:
        mine = [p for p in s.leads if p.assignee == row.agent_id]
        assert row.figures.leads == len(mine)
        assert row.figures.p50_seconds == nearest_rank(response_seconds(mine), 50)
        assert row.figures.p90_seconds == nearest_rank(response_seconds(mine), 90)
        assert (row.figures.sla_met, row.figures.sla_breached, row.figures.sla_pending) == (
            sla_counts(mine, clock.now())
        )
    medians = [r.figures.p50_seconds for r in result.response_by_manager]
    answered = [m for m in medians if m is not None]
    assert answered == sorted(answered, reverse=True)  # slowest first
    slowest = result.response_by_manager[0]
    assert result.slowest_agent_id == slowest.agent_id


async def test_workload_is_open_leads_per_manager_at_each_days_end(database, clock):
    s = await scenario(database, clock)
    result = await report(database)
    assert result.workload_days == PERIOD.days
    everything = [*s.leads, s.before]  # a lead from before the period is work all the same
    series = {row.agent_id: row for row in result.workload}
    ends = day_ends(PERIOD)
    for agent in (s.anna, s.boris):
        expected = [open_at(everything, agent.id, end) for end in ends]
        if not any(expected):
            assert agent.id not in series
            continue
        row = series[agent.id]
        assert row.open_by_day == expected, agent.name
        assert (row.peak, row.at_end) == (max(expected), expected[-1])
        assert row.average == round(sum(expected) / len(expected), 1)
    total_at_end = sum(row.at_end for row in result.workload)
    assert total_at_end == sum(p.closed is None for p in everything) == 4


async def test_a_missed_first_response_shows_as_taken_back_and_reassigned(database, clock):
    await make_queue(database)
    anna = await make_agent(database, name="Анна", capacity=5)
    boris = await make_agent(database, name="Борис", capacity=5)
    clock.set(START)
    lead = await new_lead(database, source="website")
    first = lead.assignee_id
    second = ({anna.id, boris.id} - {first}).pop()
    clock.advance(SLA.total_seconds() + 1)
    assert await TimerRunner(database).fire_due() >= 1
    await Dispatcher(database).drain()
    clock.set(START + timedelta(days=1))
    result = await report(
        database, period=analytics.Period(date(2026, 1, 5), date(2026, 1, 6), ZONE)
    )
    outcomes = result.routing
    assert (outcomes.items, outcomes.reassigned, outcomes.assigned_once) == (1, 1, 0)
    assert outcomes.unassigned == 1
    assert outcomes.unassigned_by_reason == {"first_response_sla": 1, "agent_unavailable": 0}
    [row] = [r for r in outcomes.by_agent if r.agent_id == first]
    assert row.unassigned == 1
    assert outcomes.offered == 0  # a direct queue offers nothing
    workload = {row.agent_id: row.open_by_day for row in result.workload}
    assert workload == {second: [1, 1]}  # the first owner's spell ended the same day
    [only] = result.conversion_by_manager
    assert only.key == str(second)


async def test_the_source_and_team_filters(database, clock):
    s = await scenario(database, clock)
    partner = await report(database, source=" Partner ")
    assert partner.filters.source == "partner"
    assert partner.summary.leads == 3
    assert [r.key for r in partner.conversion_by_source] == ["partner"]
    assert {stage.key: stage.reached for stage in partner.funnel}["in_progress"] == 1

    north = await report(database, team="north")
    anna_leads = [p for p in s.leads if p.assignee == s.anna.id]
    assert north.summary.leads == len(anna_leads)
    assert {r.key for r in north.conversion_by_manager} <= {str(s.anna.id)}
    assert {row.agent_id for row in north.workload} <= {s.anna.id}
    assert (await report(database, team="nobody")).summary.leads == 0


async def test_an_operator_sees_only_their_own_figures(database, clock):
    s = await scenario(database, clock)
    own = await report(database, Viewer(sees_all=False, agent_id=s.anna.id))
    mine = [p for p in s.leads if p.assignee == s.anna.id]
    assert own.filters.own_only is True
    assert own.summary.leads == len(mine)
    assert own.response.responded == len(response_seconds(mine))
    assert {r.agent_id for r in own.response_by_manager} <= {s.anna.id}
    assert {row.agent_id for row in own.workload} <= {s.anna.id}
    # Not an agent: nothing at all (never everyone's figures).
    nobody = await report(database, Viewer(sees_all=False, agent_id=None))
    assert (nobody.summary.leads, nobody.workload, nobody.routing.items) == (0, [], 0)


async def test_an_empty_period_gives_zeros_and_no_shares(database, clock):
    await scenario(database, clock)
    period = analytics.Period(date(2025, 6, 1), date(2025, 6, 14), ZONE)
    result = await report(database, period=period)
    assert (result.summary.leads, result.summary.won_pct, result.summary.won_of_closed_pct) == (
        0, None, None,
    )  # fmt: skip
    assert all(stage.reached == 0 and stage.reached_pct is None for stage in result.funnel)
    assert result.conversion_by_source == []
    assert [w.leads for w in result.conversion_by_week] == [0, 0, 0]  # W22 (one day), W23, W24
    assert (result.response.p50_seconds, result.response.sla_breached_pct) == (None, None)
    assert (result.best_source, result.slowest_agent_id) == (None, None)
    assert result.workload == []


async def test_the_period_defaults_to_30_days_and_refuses_backwards_or_too_long(clock):
    period = analytics.resolve_period(None, None, ZONE)
    assert (period.date_from, period.date_to) == (date(2025, 12, 7), date(2026, 1, 5))
    assert period.starts_at == datetime(2025, 12, 6, 21, tzinfo=UTC)  # Moscow midnight
    only_from = analytics.resolve_period(date(2025, 12, 1), None, ZONE)
    assert only_from.date_to == date(2026, 1, 5)
    for start, end in ((date(2026, 1, 5), date(2026, 1, 4)), (date(2024, 1, 1), date(2025, 1, 1))):
        with pytest.raises(ValidationFailed) as refused:
            analytics.resolve_period(start, end, ZONE, prefix="query")
        assert refused.value.errors[0].field == "query.to"
    assert (analytics.resolve_period(date(2025, 1, 6), date(2026, 1, 6), ZONE)).days[-1] == date(
        2026, 1, 6
    )  # 366 days is the most


async def test_the_report_costs_the_same_queries_for_few_and_many_leads(database, clock):
    await make_queue(database)
    await make_agent(database, capacity=100)
    clock.set(START)
    await new_lead(database)
    with count_queries(database) as few:
        await report(database)
    for n in range(12):
        lead = await new_lead(database, source=f"s{n % 3}", amount_minor=100_000 * (n + 1))
        clock.advance(30)
        await move(database, lead.id, "in_progress")
    with count_queries(database) as many:
        await report(database)
    assert many.count == few.count <= 20, many.statements


# -- an invariant over random histories -------------------------------------------------------
step = st.tuples(
    st.sampled_from(["website", "partner", "call"]),
    st.sampled_from([None, "in_progress", "lost", "won"]),
    st.integers(0, 2000),
)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(step, min_size=1, max_size=8))
async def test_random_histories_add_up(database, clock, steps):
    """Whatever happened: conversion by source recomputed from the scenario matches, the rows of
    every breakdown add up to the summary, and every lead reached the initial status."""
    leads_so_far = await _count(database, Lead)
    if not await _count(database, Queue):
        await make_queue(database)
        await make_agent(database, capacity=1000)
    # Each example gets days of its own, after the previous examples' (same database).
    day = START + timedelta(days=3 * leads_so_far + 400)
    clock.set(day)
    planned: list[Planned] = []
    for source, target, wait in steps:
        p = await _take(database, clock, source, "")
        clock.advance(wait)
        path = {"in_progress": ["in_progress"], "lost": ["lost"], "won": ["in_progress",
                "qualified", "won"], None: []}[target]  # fmt: skip
        await _move(database, clock, p, *path)
        planned.append(p)
    local = day.astimezone(ZoneInfo(ZONE)).date()
    result = await report(database, period=analytics.Period(local, local + timedelta(1), ZONE))
    assert result.summary.leads == len(planned)
    for source in {p.source for p in planned}:
        row = rows_by_key(result.conversion_by_source)[source]
        assert (row.leads, row.closed, row.won) == conversion(
            [p for p in planned if p.source == source]
        )
    for rows in (result.conversion_by_source, result.conversion_by_manager,
                 result.conversion_by_product, result.conversion_by_week):  # fmt: skip
        assert sum(r.leads for r in rows) == result.summary.leads
        assert sum(r.won for r in rows) == result.summary.won
    assert result.funnel[0].reached == result.summary.leads
    assert result.response.responded == len(response_seconds(planned))
    assert result.response.p90_seconds == nearest_rank(response_seconds(planned), 90)


async def _count(database, model) -> int:
    async with database.reader() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)
