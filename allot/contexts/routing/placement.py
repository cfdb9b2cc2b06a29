"""Set-based submission: a batch of new work items (an import's, or concurrent API requests')
decided together.

`submit_many` gives each item the outcome `submit` would give it if the items were submitted
one after another (highest priority first, then in the given order), in a constant number of
statements per queue instead of ~8 per item:

1. one read of the queue's best eligible members (the strategy's index order, as `submit`
   reads it), as many as there are items plus a margin, and their agent rows locked in id
   order with `SKIP LOCKED` (PostgreSQL): an agent another transaction is placing work with
   right now is left to it, so concurrent batches spread over the next least loaded instead of
   queueing behind each other for the same few agents;
2. the choice, in memory, with the pure decision core's order (`decision.sort_key`): after
   each pick the chosen agent's load, spare capacity, last assignment, tie-break draw and
   virtual time in the queue change as the database's would, so the next item sees them. An
   agent outside the rows read never becomes the best: every agent read stays at least as good
   (loads and turns only grow, and more rows are read than there are items);
3. ONE conditional UPDATE for all chosen agents, reserving for each the sum of its items'
   weights and counting their number against its quotas (I1: the WHERE clause is the check, as
   in `repository.reserve_capacity`), then one executemany of their membership mirrors (I4);
4. the items INSERTed in one statement, already assigned to their agent (I2: a row nobody else
   has seen has one owner) or waiting when every eligible member was read and none can take
   them; their first-response timers and `routing.item.assigned` / `routing.item.waiting`
   events, as `submit` records them.

What the plan does not cover goes through `submit` one item at a time, so every rule stays in
one place: queues in offer or broadcast mode or with a scorer, members with per-kind caps, an
agent whose reservation fails (full, away or over quota since the read), and items left over
when not every eligible member was read.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, bindparam, case, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel import timers
from allot.kernel.context import ContextSnapshot
from allot.kernel.db.bulk_insert import insert_rows
from allot.kernel.events.outbox import NewEvent, publish_many
from allot.kernel.ids import new_id

from . import decision_log, events, explain, mirror, rule_catalog
from . import repository as repo
from .decision import Candidate, sort_key, tie_draw, vt_step
from .engine import BACKLOG_SWEEP_OF_AGENT, DIRECT_CANDIDATES, FIRST_RESPONSE_DUE
from .escalation import ESCALATION
from .flow import Moment
from .models import BUSY
from .queue_catalog import QueueRules
from .repository import AGENTS, ITEMS
from .rule_catalog import Placement
from .rules import next_due
from .schemas import SubmitResult
from .service import submit


@dataclass(frozen=True, slots=True)
class NewItem:
    """One work item for `submit_many`; the same fields `submit` takes as keywords."""

    reference: str
    kind: str
    attributes: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    weight: int = 1
    first_response_due_at: datetime | None = None


@dataclass(slots=True)
class _Plan:
    """`_plan`'s answer for one queue: which agent takes which items (positions, in pick
    order), the items nobody read can take, whether the read covered every eligible member, the
    members skipped as busy in another transaction, per placed item the chosen candidate and
    the runner-up as the decision log keeps them (their values at that pick), and each chosen
    agent's last pick time (stored as its `last_assigned_at`)."""

    chosen: dict[uuid.UUID, list[int]]
    unplaced: list[int]
    whole_pool: bool
    busy: list[uuid.UUID]
    facts: dict[int, list[dict[str, Any]]]
    last_pick: dict[uuid.UUID, datetime]


@dataclass(slots=True)
class _Choice:
    """A candidate as the plan sees it; changed in memory as items are given to it."""

    agent_id: uuid.UUID
    load: int
    spare: int
    last_assigned_at: Any
    idle_since: Any
    shuffle: float
    weight: float
    virtual_time: int


async def submit_many(
    session: AsyncSession,
    items: Sequence[NewItem],
    *,
    callers: Sequence[ContextSnapshot] | None = None,
) -> list[SubmitResult]:
    """Take the items in and place them; one result per item, in order.

    `callers[i]`, when given, is the request item i came from (group commit): its events and
    timer are recorded as that request's."""
    at = Moment.read()
    results: list[SubmitResult | None] = [None] * len(items)
    by_queue: dict[uuid.UUID, tuple[QueueRules, list[int]]] = {}
    one_by_one: list[int] = []
    placements: list[Placement] = []
    for index, item in enumerate(items):
        if item.weight < 1:
            raise ValueError(f"weight of {item.reference!r} must be at least 1")
        placement = await rule_catalog.place(
            session, kind=item.kind, attributes=item.attributes, priority=item.priority,
            weight=item.weight,
        )  # fmt: skip
        placements.append(placement)
        queue = placement.queue
        if (
            queue is None
            or queue.offer_mode != "direct"
            or queue.strategy == "score"
            or placement.policy != "wait"  # fallback / escalate: `submit` applies them
        ):
            one_by_one.append(index)
        else:
            by_queue.setdefault(queue.id, (queue, []))[1].append(index)

    # What the plan does not cover goes first, before the plan locks any agent: `submit` waits
    # for an agent's row lock, and waiting while holding others' is how deadlocks start.
    await _one_by_one(session, items, sorted(one_by_one), results, callers)
    one_by_one = []
    rows: list[dict[str, Any]] = []
    waiting: list[dict[str, Any]] = []
    explained: dict[uuid.UUID, tuple[QueueRules, list[dict[str, Any]], uuid.UUID | None]] = {}
    for queue, indexes in by_queue.values():
        plan = await _plan(session, queue, items, placements, indexes, at.now)
        unplaced, busy, facts = plan.unplaced, plan.busy, plan.facts
        snapshot_id = await decision_log.snapshot_pool(
            session, queue_id=queue.id, weight=1, moment=at, busy=busy
        )
        if plan.whole_pool or busy:
            # Nobody free can take them: they wait, as `submit` would leave them. Agents that
            # another transaction was placing work with (skipped, `busy`) get a backlog pass of
            # their own right after this commit (a durable timer due now): they may have room
            # left when that transaction ends, and their backlog must not wait for the next
            # completion.
            for index in unplaced:
                waiting.append(_item_row(items[index], placements[index], None, at))
                explained[waiting[-1]["id"]] = (queue, [], snapshot_id)
                results[index] = SubmitResult.model_construct(
                    item_id=waiting[-1]["id"], state="waiting", agent_id=None, offer_ids=[]
                )
            if unplaced:
                for agent_id in busy:
                    await timers.schedule(
                        session, BACKLOG_SWEEP_OF_AGENT, at.now, {"agent_id": str(agent_id)},
                        key=f"backlog:{agent_id}",
                    )  # fmt: skip
        else:
            one_by_one += unplaced  # more members than were read (heavy items): one by one
        reserved = await _reserve(session, queue, plan, items, at)
        for agent_id, chosen in plan.chosen.items():
            if agent_id not in reserved:
                one_by_one += chosen  # full, away or over quota since the read: one by one
                continue
            for index in chosen:
                rows.append(_item_row(items[index], placements[index], agent_id, at))
                explained[rows[-1]["id"]] = (queue, facts[index], snapshot_id)
                results[index] = SubmitResult.model_construct(
                    item_id=rows[-1]["id"], state="assigned", agent_id=agent_id, offer_ids=[]
                )
    if rows or waiting:
        await insert_rows(session, ITEMS, rows + waiting)
        position = {result.item_id: i for i, result in enumerate(results) if result is not None}
        await _record_assignments(session, rows, by_queue, position, callers, at)
        await _record_waiting(session, waiting, position, callers, at, placements)
        _log_decisions(session, rows + waiting, explained, placements, position, at)

    await _one_by_one(session, items, sorted(one_by_one), results, callers)
    return [result for result in results if result is not None]


async def _one_by_one(
    session: AsyncSession,
    items: Sequence[NewItem],
    indexes: list[int],
    results: list[SubmitResult | None],
    callers: Sequence[ContextSnapshot] | None,
) -> None:
    for index in indexes:
        item = items[index]
        with _applied(callers, index):
            results[index] = await submit(
                session, reference=item.reference, kind=item.kind, attributes=item.attributes,
                priority=item.priority, weight=item.weight,
                first_response_due_at=item.first_response_due_at,
            )  # fmt: skip


async def _plan(
    session: AsyncSession,
    queue: QueueRules,
    items: Sequence[NewItem],
    placements: Sequence[Placement],
    indexes: list[int],
    now: datetime,
) -> _Plan:
    """Which agent takes which item, decided in memory (see `_Plan`)."""
    order = sorted(indexes, key=lambda i: (-placements[i].priority, i))
    limit = len(order) + DIRECT_CANDIDATES
    candidates = await repo.top_candidates(
        session,
        queue_id=queue.id,
        strategy=queue.strategy,
        weight=1,
        item_id=uuid.uuid4(),  # a new item: nobody has declined it yet
        limit=limit,
    )
    if any(c.kind_capped for c in candidates):
        # Per-kind caps are checked row by row by `reserve_capacity`.
        return _Plan({}, order, False, [], {}, {})
    # The agents are locked now, in id order, skipping any another transaction is placing work
    # with at this moment (PostgreSQL; SQLite's one writer locks nothing): concurrent batches
    # then spread over the next least loaded instead of queueing behind one another for the
    # same few agents. Lock order agent -> membership rows, as everywhere in the engine.
    agent_ids = sorted(c.agent_id for c in candidates)
    free = set((await session.execute(_lock_statement(), {"p_ids": agent_ids})).scalars())
    busy = [agent_id for agent_id in agent_ids if agent_id not in free]
    whole_pool = len(candidates) < limit and not busy
    candidates = [c for c in candidates if c.agent_id in free]
    key = sort_key(queue.strategy)
    ranked = [
        (key(c), n, _Choice(c.agent_id, c.load, c.spare, c.last_assigned_at, c.idle_since,
                            c.shuffle, c.weight, c.virtual_time))
        for n, c in enumerate(candidates)
    ]  # fmt: skip
    heapq.heapify(ranked)
    tiebreak = itertools.count(len(ranked))
    plan = _Plan({}, [], whole_pool, busy, {}, {})
    for position, index in enumerate(order):
        weight = items[index].weight
        too_small = []
        while ranked and ranked[0][2].spare < weight:
            entry = heapq.heappop(ranked)
            if entry[2].spare > 0:  # may still take a lighter item
                too_small.append(entry)
        if not ranked:
            plan.unplaced.append(index)
        else:
            best = heapq.heappop(ranked)[2]
            runner_up = [ranked[0][2]] if ranked else []
            plan.facts[index] = explain.candidate_facts([_candidate(c) for c in [best, *runner_up]])
            best.load += weight
            best.spare -= weight
            # All picks happen "now"; a microsecond per pick keeps their order, in memory and in
            # the stored `last_assigned_at` (`_reserve`), so round robin goes round within a
            # batch and after it instead of tying on one instant.
            best.last_assigned_at = now + timedelta(microseconds=position)
            best.idle_since = BUSY
            # As `sync_memberships(reshuffle=True)` draws anew: for the agent's last pick of the
            # batch these are the values stored.
            best.shuffle = tie_draw(best.agent_id, best.last_assigned_at, best.load)
            best.virtual_time += vt_step(best.weight)  # its turn in this queue, as stored
            plan.chosen.setdefault(best.agent_id, []).append(index)
            plan.last_pick[best.agent_id] = best.last_assigned_at
            if best.spare > 0:
                heapq.heappush(ranked, (key(best), next(tiebreak), best))  # type: ignore[arg-type]
        for entry in too_small:
            heapq.heappush(ranked, entry)
    return plan


def _candidate(choice: _Choice) -> Candidate:
    return Candidate(
        choice.agent_id, choice.load, choice.spare, choice.last_assigned_at, choice.idle_since,
        choice.shuffle, weight=choice.weight, virtual_time=choice.virtual_time,
    )  # fmt: skip


async def _reserve(
    session: AsyncSession, queue: QueueRules, plan: _Plan, items: Sequence[NewItem], at: Moment
) -> set[uuid.UUID]:
    """Reserve every planned agent's items in one conditional UPDATE; the agents it reserved.

    I1 for several agents and items at once: an agent's load grows by the total weight of its
    items only if all of it fits and the agent can take work, and its day's and month's
    assignments grow by their number only if the quotas allow that many more; an agent for
    which the WHERE clause fails is simply not updated (and its items go one by one)."""
    if not plan.chosen:
        return set()
    agent_ids = sorted(plan.chosen)  # locked by `_plan`
    params: dict[str, Any] = {"p_busy": BUSY, "p_today": at.today, "p_month": at.month}
    for n, agent_id in enumerate(agent_ids):
        chosen = plan.chosen[agent_id]
        params[f"a{n}"] = agent_id
        params[f"t{n}"] = plan.last_pick[agent_id]
        params[f"w{n}"] = sum(items[i].weight for i in chosen)
        params[f"n{n}"] = len(chosen)
    statement = _reserve_statement(len(agent_ids))
    states = (await session.execute(statement, params)).all()
    # Each agent takes one turn in the queue per item (weighted round robin), as the plan did.
    turns = {s.id: (queue.id, len(plan.chosen[s.id]) * vt_step(s.weight)) for s in states}
    await mirror.sync_memberships_many(
        session, states, at.today, at.month, reshuffle=True, advance=turns
    )
    return {state.id for state in states}


@functools.cache
def _lock_statement() -> Any:
    ids = bindparam("p_ids", expanding=True, type_=AGENTS.c.id.type)
    return (
        select(AGENTS.c.id)
        .where(AGENTS.c.id.in_(ids))
        .order_by(AGENTS.c.id)
        .with_for_update(skip_locked=True)
    )


@functools.cache
def _reserve_statement(agents: int) -> Any:
    """The reservation UPDATE for `agents` agents (parameters a<n>, w<n>, n<n>, t<n>: the agent,
    the total weight and the number of its items, the time of its last pick), built once per
    size: building it costs more than SQLite takes to run it."""
    agent = [bindparam(f"a{n}", type_=AGENTS.c.id.type) for n in range(agents)]
    weight = case(
        *[(AGENTS.c.id == agent[n], bindparam(f"w{n}", type_=Integer())) for n in range(agents)]
    )
    count = case(
        *[(AGENTS.c.id == agent[n], bindparam(f"n{n}", type_=Integer())) for n in range(agents)]
    )
    stamp = AGENTS.c.last_assigned_at.type
    picked = case(
        *[(AGENTS.c.id == agent[n], bindparam(f"t{n}", type_=stamp)) for n in range(agents)]
    )
    today: Any = bindparam("p_today", type_=AGENTS.c.quota_day.type)
    month: Any = bindparam("p_month", type_=AGENTS.c.quota_month.type)
    in_day = case((AGENTS.c.quota_day == today, AGENTS.c.assigned_in_day), else_=0)
    in_month = case((AGENTS.c.quota_month == month, AGENTS.c.assigned_in_month), else_=0)
    return (
        update(AGENTS)
        .where(
            AGENTS.c.id.in_(agent),
            AGENTS.c.load + weight <= AGENTS.c.capacity,
            repo.eligible_condition(),
            or_(AGENTS.c.daily_quota.is_(None), in_day + count <= AGENTS.c.daily_quota),
            or_(AGENTS.c.monthly_quota.is_(None), in_month + count <= AGENTS.c.monthly_quota),
        )
        .values(
            load=AGENTS.c.load + weight,
            last_assigned_at=picked,
            idle_since=bindparam("p_busy", type_=AGENTS.c.idle_since.type),
            assigned_in_day=in_day + count,
            quota_day=today,
            assigned_in_month=in_month + count,
            quota_month=month,
        )
        .returning(*repo.AGENT_STATE_COLUMNS)
    )


def _item_row(
    item: NewItem, placement: Placement, agent_id: uuid.UUID | None, at: Moment
) -> dict[str, Any]:
    """The stored row of a new item: assigned to `agent_id`, or waiting (None)."""
    return {
        "id": new_id(),
        "reference": item.reference,
        "kind": item.kind,
        "attributes": item.attributes,
        "weight": item.weight,
        **placement.row_values(item.priority),
        "state": "waiting" if agent_id is None else "assigned",
        "owner_agent_id": agent_id,
        "created_at": at.now,
        "enqueued_at": at.now,
        "assigned_at": None if agent_id is None else at.now,
        "first_response_at": None,
        "first_response_due_at": item.first_response_due_at,
        "closed_at": None,
        "times_routed": 0 if agent_id is None else 1,
    }


def _applied(callers: Sequence[ContextSnapshot] | None, index: int) -> AbstractContextManager[None]:
    return callers[index].applied() if callers else contextlib.nullcontext()


def _item_event(type_: str, row: dict[str, Any], caller: Any, **extra: Any) -> NewEvent:
    return NewEvent(
        type=type_,
        aggregate_type="routing.item",
        aggregate_id=row["id"],
        payload={
            "item_id": str(row["id"]),
            "reference": row["reference"],
            "kind": row["kind"],
            "queue_id": str(row["queue_id"]),
            **extra,
        },
        caller=caller,
    )


async def _record_waiting(
    session: AsyncSession,
    rows: list[dict[str, Any]],
    position: dict[uuid.UUID, int],
    callers: Sequence[ContextSnapshot] | None,
    at: Moment,
    placements: Sequence[Placement],
) -> None:
    """The `routing.item.waiting` event `engine.route` publishes for an item nobody can take,
    and, under rules, its escalation timer (as `escalation.schedule_next` sets it at age 0)."""
    timer_rows = []
    for row in rows:
        index = position[row["id"]]
        rules = placements[index].rules
        if rules is None:
            continue
        due = next_due(
            rules.definition, row["rule_filter"], steps_done=0, priority=row["priority"],
            ageing_since=0,
        )  # fmt: skip
        if due is not None:
            with _applied(callers, index):
                timer_rows.append(
                    timers.timer_row(
                        ESCALATION,
                        at.now + timedelta(seconds=due),
                        {"item_id": str(row["id"]), "ageing_since": 0},
                        key=f"esc:{row['id']}",
                    )
                )
    await timers.schedule_rows(session, timer_rows)
    await publish_many(
        session,
        [
            _item_event(
                events.ITEM_WAITING,
                row,
                callers[position[row["id"]]] if callers else None,
                reason="no_eligible_agent",
            )
            for row in rows
        ],
    )


def _log_decisions(
    session: AsyncSession,
    rows: list[dict[str, Any]],
    explained: dict[uuid.UUID, tuple[QueueRules, list[dict[str, Any]], uuid.UUID | None]],
    placements: Sequence[Placement],
    position: dict[uuid.UUID, int],
    at: Moment,
) -> None:
    """One decision per item, as `engine.route` logs it (candidates: the pick and the
    runner-up at that moment of the plan; the pool snapshot is the batch's). Logged in the
    plan's pick order (priority, then arrival), so the log's ids keep the order of the picks."""
    for row in sorted(rows, key=lambda row: (-row["priority"], position[row["id"]])):
        queue, facts, snapshot_id = explained[row["id"]]
        placement = placements[position[row["id"]]]
        owner = row["owner_agent_id"]
        decision_log.record(
            session,
            item_id=row["id"],
            moment=at,
            trigger="submitted",
            outcome=row["state"],
            queue_id=queue.id,
            strategy=queue.strategy,
            agent_ids=[owner] if owner is not None else [],
            candidates=facts,
            tie_break=explain.tie_break(queue.strategy, facts),
            rule_set_id=row["rule_set_id"],
            rule_filter=placement.rules.filter_name(placement.filter_index)
            if placement.rules
            else None,
            policy="wait" if owner is None else None,
            snapshot_id=snapshot_id,
        )


async def _record_assignments(
    session: AsyncSession,
    rows: list[dict[str, Any]],
    queues: dict[uuid.UUID, tuple[QueueRules, list[int]]],
    position: dict[uuid.UUID, int],
    callers: Sequence[ContextSnapshot] | None,
    at: Moment,
) -> None:
    """What `engine._on_assigned` records per assignment: the first-response timer and the
    `routing.item.assigned` event, each as its item's caller's."""
    timer_rows: list[dict[str, Any]] = []
    assigned: list[NewEvent] = []
    for row in rows:
        due = row["first_response_due_at"]
        seconds = queues[row["queue_id"]][0].first_response_seconds
        if due is None and seconds:  # the queue's window, as `engine._on_assigned` sets it
            due = at.now + timedelta(seconds=seconds)
        index = position[row["id"]]
        if due is not None:
            with _applied(callers, index):
                timer_rows.append(
                    timers.timer_row(
                        FIRST_RESPONSE_DUE,
                        max(due, at.now),
                        {"item_id": str(row["id"]), "agent_id": str(row["owner_agent_id"])},
                        key=f"frt:{row['id']}",
                    )
                )
        assigned.append(
            _item_event(
                events.ITEM_ASSIGNED,
                row,
                callers[index] if callers else None,
                agent_id=str(row["owner_agent_id"]),
                via="direct",
                at_submit=True,
                first_response_due_at=due.isoformat() if due else None,
            )
        )
    await timers.schedule_rows(session, timer_rows)
    await publish_many(session, assigned)
