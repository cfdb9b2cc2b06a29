"""Fair share: per queue, each agent's share of the latest assignments against its weight.

Definitions (docs/routing-fairness.md explains them for managers):
- an *assignment* is a decision with outcome `assigned` (decision_log.py): a direct assignment
  on submission, a backlog pass when capacity freed, an accepted offer, a reroute, an
  escalation, a fallback. Offers are not assignments; the accept that follows one is.
- the *window* is the last W assignments of the queue, newest first by `(occurred_at, id)`
  (a sliding window by count, not by time: a quiet queue keeps its last W, a busy one turns
  them over quickly). W defaults to `WINDOW_PER_MEMBER` x the pool size, at least
  `MIN_WINDOW`, at most `MAX_WINDOW`; callers may give their own.
- the *pool* is the queue's members who are active and not on leave, **now**. Those are the
  states a manager sets to say "this person should get no work"; availability (available /
  away / offline), shift and spare capacity change many times within a window and are not
  taken out: someone often away, or slower to free capacity, gets less than their weight,
  and the board shows it, which is the point. Weights are also read now. The decision log
  keeps no per-decision record of who could take work when everyone could (its pool
  snapshots list only the excluded, and backlog passes and accepts have none), so a finer
  "eligible at each decision" definition could not be computed exactly from what is stored.
- expected share = weight / sum of the pool's weights; share = the agent's assignments / all
  assignments in the window; deviation = share / expected - 1 (0 is exact, -0.5 half the
  fair share, +0.1 ten per cent more).
- agents in the window who are not in the pool (left the queue, deactivated, on leave) are
  listed with their assignments and no expected share or deviation; their assignments count in
  the window, so the pool's shares then add up to less than 1.

Cost, whatever the number of queues (the board and /metrics show them all): one statement reads
every queue's window, a UNION ALL of one range per queue along the partial index
`ix_routing_decisions_assigned` (queue_id, occurred_at, id WHERE outcome = 'assigned';
migration 0006) that stops after W entries, so it does not grow with the history; one reads the
pools; one the names of agents outside the pools, when there are any and the caller does not
know them.
"""

from __future__ import annotations

import functools
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, Table, bindparam, literal_column, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts.routing.models import Agent, Decision, Queue, QueueMember

WINDOW_PER_MEMBER = 10
MIN_WINDOW = 10
MAX_WINDOW = 10_000

DECISIONS: Table = Decision.__table__  # type: ignore[assignment]
AGENTS: Table = Agent.__table__  # type: ignore[assignment]
MEMBERS: Table = QueueMember.__table__  # type: ignore[assignment]
QUEUES: Table = Queue.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class AgentShare:
    agent_id: uuid.UUID
    name: str
    in_pool: bool
    weight: float | None  # None: not in the pool
    assignments: int
    share: float  # of the window's assignments; 0 when there were none
    expected: float | None  # weight / the pool's total weight; None outside the pool
    deviation: float | None  # share / expected - 1; None outside the pool or with no assignments


@dataclass(frozen=True, slots=True)
class FairnessReport:
    queue_id: uuid.UUID
    queue_name: str
    window: int  # W: how many of the latest assignments are counted at most
    assignments: int  # how many there were (fewer than W while the history is short)
    pool_size: int
    agents: tuple[AgentShare, ...]  # the pool by name, then agents outside it by name
    max_abs_deviation: float | None  # over the pool; None with no assignments or no pool
    worst_agent_id: uuid.UUID | None  # whose deviation that is

    @property
    def full(self) -> bool:
        """The window holds W assignments (before that, small numbers swing the shares)."""
        return self.assignments >= self.window


def default_window(pool_size: int) -> int:
    return min(max(WINDOW_PER_MEMBER * pool_size, MIN_WINDOW), MAX_WINDOW)


WINDOWS_PER_STATEMENT = 100  # queues read by one UNION ALL (SQLite allows 500 terms)


@functools.cache
def _windows_statement(queues: int) -> Any:
    """The last W assignments of each of `queues` queues in ONE statement (parameters q<n>,
    w<n>): a UNION ALL of one bounded index range per queue, so the board and the metrics pay
    one round trip whatever the number of queues, and each range stops after its W entries."""
    branches = []
    for n in range(queues):
        branch = (
            select(DECISIONS.c.queue_id, DECISIONS.c.agent_ids)
            .where(
                DECISIONS.c.queue_id == bindparam(f"q{n}", type_=DECISIONS.c.queue_id.type),
                # `'assigned'` written into the SQL text: a partial index is only used when
                # the query repeats its predicate literally (SQLite), and PostgreSQL's generic
                # plan for a prepared `outcome = $2` could not use it either.
                DECISIONS.c.outcome == literal_column("'assigned'"),
            )
            .order_by(DECISIONS.c.occurred_at.desc(), DECISIONS.c.id.desc())
            # Rendered into the SQL, not sent as a parameter (see repository.literal_limit).
            .limit(bindparam(f"w{n}", type_=Integer(), literal_execute=True))
            .subquery(f"window_{n}")
        )
        branches.append(select(branch.c.queue_id, branch.c.agent_ids))
    return branches[0] if queues == 1 else union_all(*branches)


async def window_counts(
    session: AsyncSession, windows: dict[uuid.UUID, int]
) -> dict[uuid.UUID, tuple[int, Counter[uuid.UUID]]]:
    """Per queue (id -> W): how many assignments its window holds, and how many went to each
    agent."""
    counts: dict[uuid.UUID, Counter[uuid.UUID]] = {queue_id: Counter() for queue_id in windows}
    totals = dict.fromkeys(windows, 0)
    queue_ids = list(windows)
    for start in range(0, len(queue_ids), WINDOWS_PER_STATEMENT):
        chunk = queue_ids[start : start + WINDOWS_PER_STATEMENT]
        params: dict[str, Any] = {}
        for n, queue_id in enumerate(chunk):
            params[f"q{n}"], params[f"w{n}"] = queue_id, windows[queue_id]
        for queue_id, agent_ids in await session.execute(_windows_statement(len(chunk)), params):
            totals[queue_id] += 1
            for agent_id in agent_ids or ():  # one agent per assignment
                counts[queue_id][uuid.UUID(str(agent_id))] += 1
    return {queue_id: (totals[queue_id], counts[queue_id]) for queue_id in windows}


async def _pools(
    session: AsyncSession, queue_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[uuid.UUID, tuple[str, float]]]:
    """Per queue, its pool: members who are active and not on leave, with name and weight."""
    rows = await session.execute(
        select(MEMBERS.c.queue_id, AGENTS.c.id, AGENTS.c.name, AGENTS.c.weight)
        .join(AGENTS, AGENTS.c.id == MEMBERS.c.agent_id)
        .where(
            MEMBERS.c.queue_id.in_(queue_ids),
            AGENTS.c.is_active.is_(True),
            AGENTS.c.on_leave.is_(False),
        )
    )
    pools: dict[uuid.UUID, dict[uuid.UUID, tuple[str, float]]] = {q: {} for q in queue_ids}
    for queue_id, agent_id, name, weight in rows:
        pools[queue_id][agent_id] = (name, float(weight))
    return pools


async def _names(session: AsyncSession, agent_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not agent_ids:
        return {}
    rows = await session.execute(
        select(AGENTS.c.id, AGENTS.c.name).where(AGENTS.c.id.in_(sorted(agent_ids)))
    )
    return {row.id: row.name for row in rows}


def build_report(
    queue_id: uuid.UUID,
    queue_name: str,
    window: int,
    total: int,
    counts: Counter[uuid.UUID],
    pool: dict[uuid.UUID, tuple[str, float]],
    names: dict[uuid.UUID, str],
) -> FairnessReport:
    """The report from the window's counts and the pool (pure: the simulator can use it)."""
    pool_weight = sum(weight for _name, weight in pool.values())
    shares: list[AgentShare] = []
    for agent_id, (name, weight) in sorted(pool.items(), key=lambda kv: (kv[1][0], kv[0])):
        assigned = counts.get(agent_id, 0)
        share = assigned / total if total else 0.0
        expected = weight / pool_weight if pool_weight > 0 else None
        deviation = share / expected - 1 if total and expected else None
        shares.append(
            AgentShare(agent_id, name, True, weight, assigned, share, expected, deviation)
        )
    strays = sorted((a for a in counts if a not in pool), key=lambda a: (names.get(a, ""), a))
    for agent_id in strays:
        share = counts[agent_id] / total
        name = names.get(agent_id, str(agent_id))
        shares.append(AgentShare(agent_id, name, False, None, counts[agent_id], share, None, None))
    scored = [s for s in shares if s.deviation is not None]
    worst = max(scored, key=lambda s: abs(s.deviation or 0.0), default=None)
    return FairnessReport(
        queue_id=queue_id,
        queue_name=queue_name,
        window=window,
        assignments=total,
        pool_size=len(pool),
        agents=tuple(shares),
        max_abs_deviation=abs(worst.deviation or 0.0) if worst is not None else None,
        worst_agent_id=worst.agent_id if worst is not None else None,
    )


async def fairness_reports(
    session: AsyncSession,
    queue_ids: Sequence[uuid.UUID] | None = None,
    *,
    window: int | None = None,
) -> list[FairnessReport]:
    """One report per queue (the given ones, or every active queue), ordered by queue name.

    `window` overrides W for every queue; by default each queue's is 10 x its pool size."""
    statement = select(QUEUES.c.id, QUEUES.c.name).order_by(QUEUES.c.name, QUEUES.c.id)
    if queue_ids is None:
        statement = statement.where(QUEUES.c.is_active.is_(True))
    else:
        statement = statement.where(QUEUES.c.id.in_(list(queue_ids)))
    queues = [(queue_id, name) for queue_id, name in await session.execute(statement)]
    return await reports_for(session, queues, window=window)


async def reports_for(
    session: AsyncSession,
    queues: Sequence[tuple[uuid.UUID, str]],
    *,
    window: int | None = None,
    names: dict[uuid.UUID, str] | None = None,
) -> list[FairnessReport]:
    """The reports of these queues (id, name), in that order: two statements whatever their
    number (pools, windows), and a third for the names of agents outside the pools unless the
    caller knows every agent's name (`names`)."""
    if not queues:
        return []
    pools = await _pools(session, [queue_id for queue_id, _name in queues])
    sizes = {
        queue_id: window if window is not None else default_window(len(pools[queue_id]))
        for queue_id, _name in queues
    }
    windows = await window_counts(session, sizes)
    strays = {a for q, (_t, counts) in windows.items() for a in counts if a not in pools[q]}
    if names is None:
        names = await _names(session, strays)
    return [
        build_report(queue_id, name, sizes[queue_id], *windows[queue_id], pools[queue_id], names)
        for queue_id, name in queues
    ]


async def fairness_report(
    session: AsyncSession, queue_id: uuid.UUID, *, window: int | None = None
) -> FairnessReport | None:
    """The report of one queue; None when there is no such queue."""
    reports = await fairness_reports(session, [queue_id], window=window)
    return reports[0] if reports else None
