"""Lead analytics: ONE place computes every figure. `build_report` returns a `LeadAnalytics`;
the page (analytics_views.py), the JSON API and the CSV export (analytics_api.py,
analytics_csv.py) only render that object, so a number is the same wherever it appears.

What each figure means is written down in docs/analytics.md; in short, every figure except the
workload describes the leads CREATED in the period (a cohort, followed up to now), in the
business time zone's calendar days. The SQL is in analytics_queries.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts import routing
from allot.kernel.clock import utcnow
from allot.kernel.errors import ValidationFailed
from allot.kernel.i18n import N_, locale_var
from allot.kernel.i18n import gettext as _

from . import analytics_queries as q
from . import pipeline
from .access import Viewer
from .analytics_schemas import (
    AgentRouting,
    AnalyticsFilters,
    AnalyticsPeriod,
    ConversionRow,
    FunnelStage,
    LeadAnalytics,
    ManagerResponse,
    ResponseFigures,
    RoutingOutcomes,
    Summary,
    WorkloadSeries,
)
from .intake import LEAD_KIND

DEFAULT_DAYS = 30
MAX_DAYS = 366
CURRENCY = "RUB"  # amount bands are in roubles; other currencies form a band of their own
# Loan-amount bands for leads without `attributes.product` (upper bounds exclusive, kopecks).
AMOUNT_BANDS: tuple[tuple[str, int | None], ...] = (
    ("amount:under_10k", 10_000_00),
    ("amount:10k_30k", 30_000_00),
    ("amount:30k_100k", 100_000_00),
    ("amount:100k_500k", 500_000_00),
    ("amount:500k_plus", None),
)
BAND_LABELS = {
    "amount:under_10k": N_("Amount under 10,000 ₽"),
    "amount:10k_30k": N_("Amount 10,000–30,000 ₽"),
    "amount:30k_100k": N_("Amount 30,000–100,000 ₽"),
    "amount:100k_500k": N_("Amount 100,000–500,000 ₽"),
    "amount:500k_plus": N_("Amount 500,000 ₽ and more"),
    "amount:none": N_("No product or amount"),
    "amount:other_currency": N_("Amount in another currency"),
}
UNASSIGNED_REASONS = ("first_response_sla", "agent_unavailable")
NO_AGENT_KEY = "none"


# -- the period -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Period:
    """Calendar days `date_from`..`date_to` (both included) in the business time zone."""

    date_from: date
    date_to: date
    zone: str

    def midnight(self, day: date) -> datetime:
        return datetime.combine(day, time(0), tzinfo=ZoneInfo(self.zone)).astimezone(UTC)

    @property
    def starts_at(self) -> datetime:
        return self.midnight(self.date_from)

    @property
    def ends_at(self) -> datetime:
        return self.midnight(self.date_to + timedelta(days=1))

    @property
    def days(self) -> list[date]:
        count = (self.date_to - self.date_from).days + 1
        return [self.date_from + timedelta(days=n) for n in range(count)]

    def day_bounds(self) -> list[datetime]:
        return [self.midnight(day) for day in self.days] + [self.ends_at]

    def weeks(self) -> list[tuple[str, date, date]]:
        """ISO weeks touching the period: (`2026-W02`, first day, last day), clipped to it."""
        found: list[tuple[str, date, date]] = []
        day = self.date_from
        while day <= self.date_to:
            year, week, weekday = day.isocalendar()
            last = min(day + timedelta(days=7 - weekday), self.date_to)
            found.append((f"{year}-W{week:02d}", day, last))
            day = last + timedelta(days=1)
        return found


def resolve_period(
    date_from: date | None,
    date_to: date | None,
    zone: str,
    *,
    prefix: str = "query",
    now: datetime | None = None,
) -> Period:
    """The period asked for; by default the 30 days up to today (in `zone`), and from `date_from`
    to today when only that is given. Raises
    ValidationFailed naming `<prefix>.to` when it ends before it starts or spans over a year."""
    today = (now or utcnow()).astimezone(ZoneInfo(zone)).date()
    end = date_to or (today if date_from is None else max(today, date_from))
    start = date_from or end - timedelta(days=DEFAULT_DAYS - 1)
    if end < start:
        raise ValidationFailed.on(f"{prefix}.to", N_("The period ends before it starts"))
    if (end - start).days + 1 > MAX_DAYS:
        raise ValidationFailed.on(f"{prefix}.to", N_("A period is at most 366 days"))
    return Period(start, end, zone)


# -- the report -------------------------------------------------------------------------------
def pct(part: int, whole: int) -> float | None:
    """A share in per cent, rounded once, here, to one decimal (None: nothing to divide by)."""
    return round(100 * part / whole, 1) if whole else None


def _conversion(key: str, label: str, leads: int, closed: int, won: int, **extra: Any) -> Any:
    return ConversionRow(
        key=key,
        label=label,
        leads=leads,
        closed=closed,
        won=won,
        won_pct=pct(won, leads),
        won_of_closed_pct=pct(won, closed),
        **extra,
    )


def _best_first(rows: Iterable[ConversionRow]) -> list[ConversionRow]:
    """Highest conversion first (rows without leads last), then more leads, then by key."""
    return sorted(rows, key=lambda r: (r.won_pct is None, -(r.won_pct or 0), -r.leads, r.key))


def _slowest_first(rows: Iterable[ManagerResponse]) -> list[ManagerResponse]:
    def order(row: ManagerResponse) -> tuple[Any, ...]:
        figures = row.figures
        no_answers = figures.p50_seconds is None
        return (no_answers, -(figures.p50_seconds or 0), -(figures.p90_seconds or 0), row.name)

    return sorted(rows, key=order)


async def _scope_agents(
    session: AsyncSession, viewer: Viewer, team: str | None
) -> frozenset[uuid.UUID] | None:
    """None: every agent. Operators see only their own figures; a team keeps its agents."""
    chosen: frozenset[uuid.UUID] | None = None
    if not viewer.sees_all:
        chosen = frozenset({viewer.agent_id} if viewer.agent_id is not None else ())
    if team:
        members = frozenset(await routing.agents_in_team(session, team))
        chosen = members if chosen is None else chosen & members
    return chosen


async def build_report(
    session: AsyncSession,
    period: Period,
    viewer: Viewer,
    *,
    source: str | None = None,
    team: str | None = None,
) -> LeadAnalytics:
    source = (source or "").strip().lower() or None
    team = (team or "").strip() or None
    now = utcnow()
    agents = await _scope_agents(session, viewer, team)
    scope = q.Scope(period.starts_at, period.ends_at, now, source=source, agent_ids=agents)
    definition = await pipeline.get_pipeline(session)
    won_keys = [s.key for s in definition.statuses if s.won]
    terminal_keys = [s.key for s in definition.statuses if s.terminal]

    current = await q.current_statuses(session, scope)
    leads = sum(current.values())
    closed = sum(n for key, n in current.items() if key in terminal_keys)
    won = sum(n for key, n in current.items() if key in won_keys)
    funnel = await _funnel(session, scope, definition, current, leads)

    by_source = await q.outcomes_by(session, scope, q.source_key(), won_keys, terminal_keys)
    products = await q.outcomes_by(
        session, scope, q.product_key(AMOUNT_BANDS, currency=CURRENCY), won_keys, terminal_keys
    )
    weeks = period.weeks()
    week_bounds = [period.starts_at] + [period.midnight(w[1]) for w in weeks[1:]]
    week_bounds.append(period.ends_at)
    by_week = {
        int(row.key): row
        for row in await q.outcomes_by(
            session, scope, q.week_key(week_bounds), won_keys, terminal_keys
        )
    }
    per_agent = await q.per_assignee(session, scope, won_keys, terminal_keys)
    percentiles = await q.response_percentiles(session, scope, per_agent=True)
    overall = (await q.response_percentiles(session, scope, per_agent=False)).get(None, {})
    deltas = await q.workload_deltas(session, scope, period.day_bounds())
    offers = await routing.offer_outcomes(
        session,
        kind=LEAD_KIND,
        created_from=period.starts_at,
        created_to=period.ends_at,
        attributes={"source": source} if source else None,
        agent_ids=agents,
    )
    items = await routing.item_outcomes(
        session,
        kind=LEAD_KIND,
        created_from=period.starts_at,
        created_to=period.ends_at,
        attributes={"source": source} if source else None,
        owner_ids=agents,
    )
    taken_back = await q.unassignments(session, scope)
    names = await routing.agent_names(
        session,
        {f.agent_id for f in per_agent}
        | set(deltas.open_at_start)
        | {agent for agent, _ in (*deltas.started, *deltas.ended, *taken_back)}
        | {o.agent_id for o in offers},
    )

    def name_of(agent_id: uuid.UUID | None) -> str:
        if agent_id is None:
            return _("Waiting for an agent")
        return names.get(agent_id) or str(agent_id)[:8]

    by_manager = [
        _conversion(
            str(f.agent_id) if f.agent_id else NO_AGENT_KEY, name_of(f.agent_id), f.leads,
            f.closed, f.won,
        )
        for f in per_agent
    ]  # fmt: skip
    responses = [
        ManagerResponse(
            agent_id=f.agent_id,
            name=name_of(f.agent_id),
            figures=_response(
                f.leads, f.responded, f.sla_met, f.sla_breached, f.sla_pending,
                percentiles.get(f.agent_id, {}),
            ),
        )
        for f in per_agent
    ]  # fmt: skip
    response = _response(
        leads,
        sum(f.responded for f in per_agent),
        sum(f.sla_met for f in per_agent),
        sum(f.sla_breached for f in per_agent),
        sum(f.sla_pending for f in per_agent),
        overall,
    )
    source_rows = _best_first(
        _conversion(str(r.key), str(r.key), r.leads, r.closed, r.won) for r in by_source
    )
    product_rows = _best_first(
        _conversion(str(r.key), _product_label(str(r.key)), r.leads, r.closed, r.won)
        for r in products
    )
    week_rows = []
    for index, (key, first, last) in enumerate(weeks):
        row = by_week.get(index)
        counts = (row.leads, row.closed, row.won) if row else (0, 0, 0)
        week_rows.append(_conversion(key, key, *counts, starts_on=first, ends_on=last))
    responses = _slowest_first(responses)
    slowest = next((r.agent_id for r in responses if r.agent_id and r.figures.p50_seconds), None)
    best = next((r.key for r in source_rows if r.won), None)
    return LeadAnalytics(
        period=AnalyticsPeriod(
            date_from=period.date_from,
            date_to=period.date_to,
            timezone=period.zone,
            starts_at=period.starts_at,
            ends_at=period.ends_at,
        ),
        filters=AnalyticsFilters(
            source=source,
            team=team,
            own_only=not viewer.sees_all,
            agent_id=None if viewer.sees_all else viewer.agent_id,
        ),
        generated_at=now,
        summary=Summary(
            leads=leads,
            open=leads - closed,
            closed=closed,
            won=won,
            won_pct=pct(won, leads),
            won_of_closed_pct=pct(won, closed),
        ),
        funnel=funnel,
        conversion_by_source=source_rows,
        conversion_by_manager=_best_first(by_manager),
        conversion_by_product=product_rows,
        conversion_by_week=week_rows,
        response=response,
        response_by_manager=responses,
        workload_days=period.days,
        workload=_workload(deltas, len(period.days), name_of),
        routing=_routing(offers, items, taken_back, name_of),
        best_source=best,
        slowest_agent_id=slowest,
    )


async def _funnel(
    session: AsyncSession,
    scope: q.Scope,
    definition: pipeline.Pipeline,
    current: dict[str, int],
    leads: int,
) -> list[FunnelStage]:
    reached = await q.reached_statuses(session, scope)
    locale = locale_var.get()
    stages = [
        FunnelStage(
            key=status.key,
            label=status.label(locale),
            terminal=status.terminal,
            won=status.won,
            reached=reached.get(status.key, 0),
            reached_pct=pct(reached.get(status.key, 0), leads),
            current=current.get(status.key, 0),
        )
        for status in definition.statuses
    ]
    known = {s.key for s in definition.statuses}
    for key in sorted((set(reached) | set(current)) - known):  # statuses since removed
        stages.append(
            FunnelStage(
                key=key,
                label=key,
                terminal=False,
                won=False,
                reached=reached.get(key, 0),
                reached_pct=pct(reached.get(key, 0), leads),
                current=current.get(key, 0),
            )
        )
    return stages


def _product_label(key: str) -> str:
    if key.startswith("product:"):
        return key[len("product:") :]
    return _(BAND_LABELS.get(key, key))


def _response(
    leads: int, responded: int, met: int, breached: int, pending: int, ranks: dict[int, int]
) -> ResponseFigures:
    return ResponseFigures(
        leads=leads,
        responded=responded,
        no_response=leads - responded,
        p50_seconds=ranks.get(50),
        p90_seconds=ranks.get(90),
        sla_met=met,
        sla_breached=breached,
        sla_pending=pending,
        sla_breached_pct=pct(breached, met + breached),
    )


def _workload(deltas: q.WorkloadDeltas, days: int, name_of: Any) -> list[WorkloadSeries]:
    agents = set(deltas.open_at_start) | {a for a, _ in (*deltas.started, *deltas.ended)}
    series = []
    for agent in agents:
        count = deltas.open_at_start.get(agent, 0)
        per_day = []
        for day in range(days):
            count += deltas.started.get((agent, day), 0) - deltas.ended.get((agent, day), 0)
            per_day.append(count)
        if not any(per_day):
            continue  # its spells all began and ended between two days' ends
        series.append(
            WorkloadSeries(
                agent_id=agent,
                name=name_of(agent),
                open_by_day=per_day,
                average=round(sum(per_day) / days, 1) if days else 0.0,
                peak=max(per_day, default=0),
                at_end=per_day[-1] if per_day else 0,
            )
        )
    return sorted(series, key=lambda s: (-s.average, s.name))


def _routing(
    offers: list[routing.OfferCounts],
    items: routing.ItemCounts,
    taken_back: dict[tuple[uuid.UUID, str], int],
    name_of: Any,
) -> RoutingOutcomes:
    agents = {o.agent_id for o in offers if o.agent_id} | {a for a, _ in taken_back}
    by_offer = {o.agent_id: o for o in offers}
    rows = []
    for agent in agents:
        counts = by_offer.get(agent) or routing.OfferCounts(agent)
        rows.append(
            AgentRouting(
                agent_id=agent,
                name=name_of(agent),
                offered=counts.offered,
                accepted=counts.count("accepted"),
                declined=counts.count("declined"),
                timed_out=counts.count("timed_out"),
                rescinded=counts.count("rescinded"),
                pending=counts.count("pending"),
                unassigned=sum(n for (a, _), n in taken_back.items() if a == agent),
            )
        )
    rows.sort(key=lambda r: (-(r.declined + r.timed_out + r.unassigned), r.name))

    def total(status: str) -> int:
        return sum(o.count(status) for o in offers)

    by_reason = dict.fromkeys(UNASSIGNED_REASONS, 0)
    for (_agent, reason), n in taken_back.items():
        by_reason[reason or "other"] = by_reason.get(reason or "other", 0) + n
    return RoutingOutcomes(
        offered=sum(o.offered for o in offers),
        accepted=total("accepted"),
        declined=total("declined"),
        timed_out=total("timed_out"),
        rescinded=total("rescinded"),
        pending=total("pending"),
        items=items.items,
        never_assigned=items.never_assigned,
        assigned_once=items.assigned_once,
        reassigned=items.reassigned,
        unassigned=sum(taken_back.values()),
        unassigned_by_reason=by_reason,
        by_agent=rows,
    )


async def source_suggestions(session: AsyncSession, period: Period) -> list[str]:
    return await q.sources_in(session, period.starts_at, period.ends_at)


async def team_suggestions(session: AsyncSession) -> list[str]:
    return await routing.team_names(session)
