"""The simulator's `submit_many`: items that arrived at one instant, placed as placement.py
placed them (the plan in memory with the decision core's order, one reservation per agent),
so a replayed batch ends with the owners the real batch gave.

The batch's order is the order its items were given in; the record does not keep it, so the
simulation takes them in reference order (a lead's reference carries its time-ordered id, so for
imports and grouped intake that is the order they came in). See docs/routing-simulator.md.
"""

from __future__ import annotations

import heapq
import itertools
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from allot.contexts.routing.decision import sort_key, tie_draw, vt_step
from allot.contexts.routing.engine import DIRECT_CANDIDATES
from allot.contexts.routing.escalation import rule_of
from allot.contexts.routing.models import BUSY
from allot.contexts.routing.simulation_model import QueueSpec

if TYPE_CHECKING:
    from allot.contexts.routing.simulator import SimItem, Simulation


@dataclass(slots=True)
class _Choice:
    """A candidate as the plan sees it, changed in memory as items are given to it."""

    agent_id: uuid.UUID
    load: int
    spare: int
    last_assigned_at: datetime
    idle_since: datetime
    shuffle: float
    weight: float
    virtual_time: int


def plan_batch(sim: Simulation, items: list[SimItem]) -> None:
    """placement.submit_many: what the plan does not cover one by one first, then each
    queue's plan, then what the plan left over one by one."""
    one_by_one: list[int] = []
    by_queue: dict[uuid.UUID, tuple[QueueSpec, list[int]]] = {}
    for index, item in enumerate(items):
        queue = sim.h.queues.get(item.queue_id) if item.queue_id is not None else None
        rule = rule_of(item.rules, item)  # type: ignore[arg-type]
        policy = rule.when_nobody_available if rule is not None else "wait"
        if (
            queue is None
            or queue.rules.offer_mode != "direct"
            or queue.rules.strategy == "score"
            or policy != "wait"
        ):
            one_by_one.append(index)
        else:
            by_queue.setdefault(queue.rules.id, (queue, []))[1].append(index)
    for index in one_by_one:
        sim.submit(items[index])
    later: list[int] = []
    for queue, indexes in by_queue.values():
        plan, unplaced, whole_pool = _plan(sim, queue, items, indexes)
        if whole_pool:  # nobody can take them: they wait, with their escalation timer
            for index in unplaced:
                sim.to_waiting(items[index])
                if items[index].rules is not None:
                    sim.schedule_escalation(items[index], since=0.0)
        else:
            later += unplaced
        reserved = _reserve(sim, queue, plan, items)
        for agent_id, chosen in plan.items():
            if agent_id not in reserved:
                later += chosen  # full, away or over quota: one by one
                continue
            for index in chosen:
                sim.assigned(items[index], queue, sim.agents[agent_id])
    for index in sorted(later):
        sim.submit(items[index])


def _plan(
    sim: Simulation, queue: QueueSpec, items: list[SimItem], indexes: list[int]
) -> tuple[dict[uuid.UUID, list[int]], list[int], bool]:
    """placement._plan: which agent takes which item, the items nobody read can take, and
    whether the read covered every eligible member."""
    order = sorted(indexes, key=lambda i: (-items[i].priority, i))
    limit = len(order) + DIRECT_CANDIDATES
    candidates = sim.candidates(queue, None, limit)
    if any(c.kind_capped for c in candidates):
        return {}, order, False
    whole_pool = len(candidates) < limit
    key = sort_key(queue.rules.strategy)
    ranked: list[Any] = [
        (
            key(c),
            n,
            _Choice(
                c.agent_id,
                c.load,
                c.spare,
                c.last_assigned_at,
                c.idle_since,
                c.shuffle,
                c.weight,
                c.virtual_time,
            ),
        )
        for n, c in enumerate(candidates)
    ]
    heapq.heapify(ranked)
    tiebreak = itertools.count(len(ranked))
    plan: dict[uuid.UUID, list[int]] = {}
    unplaced: list[int] = []
    now = sim.now
    for position, index in enumerate(order):
        weight = items[index].rec.weight
        too_small = []
        while ranked and ranked[0][2].spare < weight:
            entry = heapq.heappop(ranked)
            if entry[2].spare > 0:
                too_small.append(entry)
        if not ranked:
            unplaced.append(index)
        else:
            best = heapq.heappop(ranked)[2]
            best.load += weight
            best.spare -= weight
            best.last_assigned_at = now + timedelta(microseconds=position)
            best.idle_since = BUSY
            best.shuffle = tie_draw(best.agent_id, now, best.load)
            best.virtual_time += vt_step(best.weight)
            plan.setdefault(best.agent_id, []).append(index)
            if best.spare > 0:
                heapq.heappush(ranked, (key(best), next(tiebreak), best))
        for entry in too_small:
            heapq.heappush(ranked, entry)
    return plan, unplaced, whole_pool


def _reserve(
    sim: Simulation, queue: QueueSpec, plan: dict[uuid.UUID, list[int]], items: list[SimItem]
) -> set[uuid.UUID]:
    """placement._reserve: each planned agent's items in one conditional step (I1 and the
    quotas for all of them at once), then the mirror with its final state."""
    today, month = sim.day()
    reserved: set[uuid.UUID] = set()
    for agent_id in sorted(plan):
        agent, chosen = sim.agents[agent_id], plan[agent_id]
        weight, count = sum(items[i].rec.weight for i in chosen), len(chosen)
        in_day = agent.assigned_in_day if agent.quota_day == today else 0
        in_month = agent.assigned_in_month if agent.quota_month == month else 0
        if (
            agent.load + weight > agent.capacity
            or not agent.can_take_work
            or (agent.daily_quota is not None and in_day + count > agent.daily_quota)
            or (agent.monthly_quota is not None and in_month + count > agent.monthly_quota)
        ):
            continue
        agent.load += weight
        agent.last_assigned_at, agent.idle_since = sim.now, BUSY
        sim.count_assignments(agent, count, sync=False)
        sim.sync(agent, reshuffle=True, advance=(queue.rules.id, count * vt_step(agent.weight)))
        reserved.add(agent_id)
    return reserved
