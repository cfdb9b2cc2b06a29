"""The SQL of the lead analytics (analytics.py assembles the report from these): every figure is
an aggregate computed by the database (GROUP BY, window functions), so a report costs a fixed
number of queries whatever the number of leads, and only aggregates travel to Python.

Portable between SQLite and PostgreSQL:
- grouping keys that need bound values (week and day boundaries, amount bands) are computed in
  a subquery and grouped by its column: PostgreSQL cannot tell that two bound copies of one
  expression are the same, so `GROUP BY <expression with parameters>` would be refused;
- percentiles use the nearest-rank method with `row_number()` over the ordered durations
  (SQLite has no percentile_cont): the p-th percentile is the value at rank ceil(p/100 * n);
- the seconds between two timestamps are `julianday` arithmetic on SQLite (milliseconds are
  kept) and `EXTRACT(EPOCH ...)` on PostgreSQL (see `SecondsBetween`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Float, and_, case, func, literal, null, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import FunctionElement

from allot.kernel.db import UTCDateTime

from .models import Activity, Lead

ASSIGNMENT_KINDS = ("assigned", "unassigned")


class SecondsBetween(FunctionElement[float]):
    """`later - earlier` in seconds, as a float."""

    type = Float()
    name = "seconds_between"
    inherit_cache = True


@compiles(SecondsBetween, "sqlite")
def _seconds_sqlite(element: SecondsBetween, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = list(element.clauses)
    return (
        f"((julianday({compiler.process(later, **kw)}) - "
        f"julianday({compiler.process(earlier, **kw)})) * 86400.0)"
    )


@compiles(SecondsBetween, "postgresql")
def _seconds_postgresql(element: SecondsBetween, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = list(element.clauses)
    return (
        f"EXTRACT(EPOCH FROM ({compiler.process(later, **kw)} - {compiler.process(earlier, **kw)}))"
    )


@dataclass(frozen=True, slots=True)
class Scope:
    """Which leads a report counts: created in `[starts_at, ends_at)`, of `source` when given,
    assigned to one of `agent_ids` when given (an empty set: none). `now` decides which
    first-response deadlines have passed."""

    starts_at: datetime
    ends_at: datetime
    now: datetime
    source: str | None = None
    agent_ids: frozenset[uuid.UUID] | None = None

    def cohort(self) -> list[Any]:
        conditions: list[Any] = [Lead.created_at >= self.starts_at, Lead.created_at < self.ends_at]
        if self.source is not None:
            conditions.append(Lead.source == self.source)
        if self.agent_ids is not None:
            conditions.append(Lead.assignee_id.in_(sorted(self.agent_ids)))
        return conditions


def _moment(value: datetime) -> Any:
    return literal(value, UTCDateTime())


def bucket(column: Any, bounds: Sequence[datetime]) -> Any:
    """The index of the interval `[bounds[i], bounds[i+1])` that `column` falls in (bounds in
    ascending order; values outside them are the caller's to exclude)."""
    if len(bounds) <= 2:
        return literal(0)
    whens = [(column < _moment(bound), index) for index, bound in enumerate(bounds[1:-1])]
    return case(*whens, else_=len(bounds) - 2)


# -- the pipeline -----------------------------------------------------------------------------
async def current_statuses(session: AsyncSession, scope: Scope) -> dict[str, int]:
    """The scope's leads by the status they are in now."""
    rows = await session.execute(
        select(Lead.status, func.count()).where(*scope.cohort()).group_by(Lead.status)
    )
    return {status: int(count) for status, count in rows}


async def reached_statuses(session: AsyncSession, scope: Scope) -> dict[str, int]:
    """How many of the scope's leads ever were in each status: the timeline's `created` and
    `status_changed` rows name every status a lead entered (`to_status`)."""
    statement = (
        select(Activity.to_status, func.count(func.distinct(Activity.lead_id)))
        .select_from(Activity)
        .join(Lead, Lead.id == Activity.lead_id)
        .where(*scope.cohort(), Activity.to_status.is_not(None))
        .group_by(Activity.to_status)
    )
    return {str(status): int(count) for status, count in await session.execute(statement)}


# -- conversion -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Outcomes:
    key: Any
    leads: int
    closed: int
    won: int


def _outcome_columns(
    status: Any, won_keys: Sequence[str], terminal_keys: Sequence[str]
) -> tuple[Any, Any, Any]:
    return (
        func.count(),
        func.coalesce(func.sum(case((status.in_(list(terminal_keys)), 1), else_=0)), 0),
        func.coalesce(func.sum(case((status.in_(list(won_keys)), 1), else_=0)), 0),
    )


async def outcomes_by(
    session: AsyncSession,
    scope: Scope,
    key: Any,
    won_keys: Sequence[str],
    terminal_keys: Sequence[str],
) -> list[Outcomes]:
    """The scope's leads grouped by `key` (an expression over the lead): leads, closed (in a
    terminal status), won (in a won status)."""
    keyed = select(key.label("k"), Lead.status.label("s")).where(*scope.cohort()).subquery()
    statement = select(keyed.c.k, *_outcome_columns(keyed.c.s, won_keys, terminal_keys)).group_by(
        keyed.c.k
    )
    return [Outcomes(k, int(n), int(c), int(w)) for k, n, c, w in await session.execute(statement)]


def source_key() -> Any:
    return Lead.source


def week_key(bounds: Sequence[datetime]) -> Any:
    return bucket(Lead.created_at, bounds)


def product_key(bands: Sequence[tuple[str, int | None]], *, currency: str) -> Any:
    """`attributes.product` when the lead has one (not blank), else its loan-amount band: the
    first of `bands` (key, upper bound in minor units, exclusive; None: no bound) its amount is
    under; `amount:none` without an amount, `amount:other_currency` in another currency."""
    product = func.nullif(func.trim(Lead.attributes["product"].as_string()), "")
    band_whens: list[Any] = [
        (Lead.amount_minor.is_(None), "amount:none"),
        (func.coalesce(Lead.currency, currency) != currency, "amount:other_currency"),
    ]
    last = bands[-1][0]
    for key, upper in bands[:-1]:
        assert upper is not None
        band_whens.append((Lead.amount_minor < upper, key))
    band = case(*band_whens, else_=last)
    return case((product.is_not(None), "product:" + product), else_=band)


# -- first response and SLA -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AssigneeFigures:
    agent_id: uuid.UUID | None
    leads: int
    closed: int
    won: int
    responded: int
    sla_met: int
    sla_breached: int
    sla_pending: int


async def per_assignee(
    session: AsyncSession, scope: Scope, won_keys: Sequence[str], terminal_keys: Sequence[str]
) -> list[AssigneeFigures]:
    """Per current assignee (None: waiting for one): outcomes, responses and the SLA, as
    `Lead.sla_state` judges it (met: answered by the deadline; breached: answered late, or not
    answered and the deadline passed; pending: not answered, deadline still ahead)."""
    due, answered = Lead.first_response_due_at, Lead.first_responded_at
    now = _moment(scope.now)

    def share(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    statement = (
        select(
            Lead.assignee_id,
            *_outcome_columns(Lead.status, won_keys, terminal_keys),
            func.count(answered),
            share(and_(due.is_not(None), answered.is_not(None), answered <= due)),
            share(
                and_(
                    due.is_not(None),
                    or_(answered > due, and_(answered.is_(None), due < now)),
                )
            ),
            share(and_(due.is_not(None), answered.is_(None), due >= now)),
        )
        .where(*scope.cohort())
        .group_by(Lead.assignee_id)
    )
    return [
        AssigneeFigures(row[0], *(int(value) for value in row[1:]))
        for row in await session.execute(statement)
    ]


PERCENTILES = (50, 90)


async def response_percentiles(
    session: AsyncSession, scope: Scope, *, per_agent: bool
) -> dict[Any, dict[int, int]]:
    """Nearest-rank p50 and p90 of the time to first response (whole seconds) of the scope's
    answered leads: per current assignee, or for all of them (key None). Only the ranked rows
    leave the database: at most two per group."""
    seconds = SecondsBetween(Lead.first_responded_at, Lead.created_at)
    group: Any = Lead.assignee_id if per_agent else null()
    partition: Any = Lead.assignee_id if per_agent else None
    ranked = (
        select(
            group.label("g"),
            seconds.label("s"),
            func.row_number().over(partition_by=partition, order_by=seconds).label("rn"),
            func.count().over(partition_by=partition).label("n"),
        )
        .where(*scope.cohort(), Lead.first_responded_at.is_not(None))
        .subquery()
    )
    ranks = {p: (ranked.c.n * p + 99) // 100 for p in PERCENTILES}  # ceil(p/100 * n)
    statement = select(ranked.c.g, ranked.c.rn, ranked.c.n, ranked.c.s).where(
        or_(*(ranked.c.rn == rank for rank in ranks.values()))
    )
    found: dict[Any, dict[int, int]] = {}
    for key, rank, count, value in await session.execute(statement):
        for p in PERCENTILES:
            if rank == (count * p + 99) // 100:
                found.setdefault(key, {})[p] = max(round(float(value)), 0)
    return found


# -- workload ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WorkloadDeltas:
    open_at_start: dict[uuid.UUID, int]
    started: dict[tuple[uuid.UUID, int], int]  # (agent, day index) -> assignments begun
    ended: dict[tuple[uuid.UUID, int], int]  # (agent, day index) -> assignments ended


async def workload_deltas(
    session: AsyncSession, scope: Scope, day_bounds: Sequence[datetime]
) -> WorkloadDeltas:
    """Assignment spells from the timeline: an `assigned` row starts one for its agent; the
    lead's next `assigned`/`unassigned` row or its closing (`closed_at`) ends it. Counted are
    the spells open at the start of the period and those beginning and ending on each day, so
    the open leads at the end of day d are the first plus the running sum of the others.
    Every lead counts here (not only those created in the period), of `scope.source` when given
    and for the agents in `scope.agent_ids` when given."""
    start, end = day_bounds[0], day_bounds[-1]
    next_change = func.lead(Activity.created_at).over(
        partition_by=Activity.lead_id, order_by=(Activity.created_at, Activity.id)
    )
    lead_filter: list[Any] = [or_(Lead.closed_at.is_(None), Lead.closed_at >= _moment(start))]
    if scope.source is not None:
        lead_filter.append(Lead.source == scope.source)
    changes = (
        select(
            Activity.kind.label("kind"),
            Activity.agent_id.label("agent_id"),
            Activity.created_at.label("began"),
            next_change.label("next_at"),
            Lead.closed_at.label("closed_at"),
        )
        .select_from(Activity)
        .join(Lead, Lead.id == Activity.lead_id)
        # A change after the period only ever ends a spell after it: leaving it out of the
        # window keeps the spell open past the end, which counts the same.
        .where(
            Activity.kind.in_(ASSIGNMENT_KINDS), Activity.created_at < _moment(end), *lead_filter
        )
        .subquery()
    )
    ended_at = case(
        (changes.c.next_at.is_(None), changes.c.closed_at),
        (changes.c.closed_at.is_(None), changes.c.next_at),
        (changes.c.next_at < changes.c.closed_at, changes.c.next_at),
        else_=changes.c.closed_at,
    )
    spell_filter: list[Any] = [changes.c.kind == "assigned", changes.c.agent_id.is_not(None)]
    if scope.agent_ids is not None:
        spell_filter.append(changes.c.agent_id.in_(sorted(scope.agent_ids)))
    spells = (
        select(
            changes.c.agent_id.label("agent_id"),
            changes.c.began.label("began"),
            ended_at.label("ended"),
        )
        .where(*spell_filter)
        .subquery()
    )
    live = or_(spells.c.ended.is_(None), spells.c.ended > spells.c.began)  # not an empty spell
    lower, upper = _moment(start), _moment(end)
    at_start = select(spells.c.agent_id, func.count()).where(
        live, spells.c.began < lower, or_(spells.c.ended.is_(None), spells.c.ended >= lower)
    )
    open_at_start = {
        agent: int(n) for agent, n in await session.execute(at_start.group_by(spells.c.agent_id))
    }

    async def per_day(moment: Any) -> dict[tuple[uuid.UUID, int], int]:
        days = (
            select(spells.c.agent_id.label("a"), bucket(moment, day_bounds).label("d"))
            .where(live, moment >= lower, moment < upper)
            .subquery()
        )
        rows = await session.execute(
            select(days.c.a, days.c.d, func.count()).group_by(days.c.a, days.c.d)
        )
        return {(agent, int(day)): int(n) for agent, day, n in rows}

    return WorkloadDeltas(
        open_at_start, await per_day(spells.c.began), await per_day(spells.c.ended)
    )


# -- routing, as the leads' timeline saw it ---------------------------------------------------
async def unassignments(session: AsyncSession, scope: Scope) -> dict[tuple[uuid.UUID, str], int]:
    """Leads taken back from an agent (the timeline's `unassigned` rows), per that agent and
    reason, for the leads created in the period (of `scope.source`). `scope.agent_ids` selects
    the agents they were taken from, not the leads' current assignees."""
    conditions: list[Any] = [
        Lead.created_at >= scope.starts_at,
        Lead.created_at < scope.ends_at,
        Activity.kind == "unassigned",
        Activity.agent_id.is_not(None),
    ]
    if scope.source is not None:
        conditions.append(Lead.source == scope.source)
    if scope.agent_ids is not None:
        conditions.append(Activity.agent_id.in_(sorted(scope.agent_ids)))
    statement = (
        select(Activity.agent_id, func.coalesce(Activity.reason, ""), func.count())
        .select_from(Activity)
        .join(Lead, Lead.id == Activity.lead_id)
        .where(*conditions)
        .group_by(Activity.agent_id, Activity.reason)
    )
    rows = await session.execute(statement)
    return {(agent, str(reason)): int(n) for agent, reason, n in rows if agent is not None}


async def sources_in(session: AsyncSession, starts_at: datetime, ends_at: datetime) -> list[str]:
    """The sources of the leads created in the period (the filter's suggestions)."""
    statement = (
        select(Lead.source)
        .where(Lead.created_at >= starts_at, Lead.created_at < ends_at)
        .distinct()
        .order_by(Lead.source)
    )
    return [str(source) for source in (await session.execute(statement)).scalars()]
