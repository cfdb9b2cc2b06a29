"""The what-if report: what would have happened over a period, next to what did.

Both columns are computed by the same functions from an `Outcome` (simulation_model.py): the
recorded one read from the decision log, items and offers, the simulated one from
simulator.py. Definitions (docs/routing-simulator.md):
- assignments: every time an item became an agent's in the period (a direct assignment, an
  accepted offer, a backlog pass, a reroute...), per agent, and each agent's share of them;
- wait: from an item's intake to its first assignment, for items that arrived in the period
  (p50 / p90 by nearest rank); still waiting: arrived, never assigned, open at the end;
- first-response SLA: an item that came with a first-response window breaches it when its
  first response comes after created_at + window, or has not come by then (and then is
  before the end of the period);
- fair share per queue: fairness.build_report over the period's assignments in the queue,
  with the pool (members active and not on leave at the end of the period) and weights as
  the replayed timeline leaves them; the largest |share / expected - 1| is shown.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from allot.contexts.routing.fairness import FairnessReport, build_report
from allot.contexts.routing.simulation_history import Loaded, load_history
from allot.contexts.routing.simulation_model import History, Outcome
from allot.contexts.routing.simulator import simulate


@dataclass(frozen=True, slots=True)
class Waits:
    arrived: int
    assigned: int
    still_waiting: int
    closed_unassigned: int
    p50: float | None  # seconds
    p90: float | None


@dataclass(frozen=True, slots=True)
class Side:
    """One column of the report: the recorded period, or the simulated one."""

    assignments: int
    per_agent: dict[uuid.UUID, int]
    waits: Waits
    sla_items: int
    sla_breached: int
    expired: int
    offers: dict[str, int]
    fairness: dict[uuid.UUID, float | None]  # per queue: the largest |deviation|


@dataclass(frozen=True, slots=True)
class AgentRow:
    agent_id: uuid.UUID
    name: str
    recorded: int
    simulated: int
    recorded_share: float
    simulated_share: float

    @property
    def change(self) -> int:
        return self.simulated - self.recorded


@dataclass(frozen=True, slots=True)
class Report:
    start: datetime
    end: datetime
    seed: int
    rules: str
    recorded: Side
    simulated: Side
    agents: list[AgentRow]
    queues: dict[uuid.UUID, str]
    # Per item that arrived or was assigned in the period: (recorded owner, simulated owner)
    # at the end of the period.
    owners: dict[uuid.UUID, tuple[uuid.UUID | None, uuid.UUID | None]] = field(default_factory=dict)

    @property
    def changed_items(self) -> int:
        return sum(1 for recorded, simulated in self.owners.values() if recorded != simulated)

    def as_dict(self) -> dict[str, Any]:
        def side(s: Side) -> dict[str, Any]:
            return {
                "assignments": s.assignments,
                "waits": {
                    "arrived": s.waits.arrived,
                    "assigned": s.waits.assigned,
                    "still_waiting": s.waits.still_waiting,
                    "closed_unassigned": s.waits.closed_unassigned,
                    "p50_seconds": s.waits.p50,
                    "p90_seconds": s.waits.p90,
                },
                "sla": {"items": s.sla_items, "breached": s.sla_breached},
                "expired": s.expired,
                "offers": dict(sorted(s.offers.items())),
                "fairness_max_deviation": {
                    self.queues[q]: (round(d, 4) if d is not None else None)
                    for q, d in s.fairness.items()
                },
            }

        return {
            "period": {"from": self.start.isoformat(), "to": self.end.isoformat()},
            "seed": self.seed,
            "rules": self.rules,
            "recorded": side(self.recorded),
            "simulated": side(self.simulated),
            "agents": [
                {
                    "agent_id": str(a.agent_id),
                    "name": a.name,
                    "recorded": a.recorded,
                    "simulated": a.simulated,
                    "change": a.change,
                    "recorded_share": round(a.recorded_share, 4),
                    "simulated_share": round(a.simulated_share, 4),
                }
                for a in self.agents
            ],
            "changed_items": self.changed_items,
            "items": {
                str(item): {
                    "recorded": str(r) if r else None,
                    "simulated": str(s) if s else None,
                }
                for item, (r, s) in self.owners.items()
            },
        }


async def simulate_period(
    session: Any,
    *,
    start: datetime,
    end: datetime,
    rules: Any,
    seed: int = 0,
    label: str | None = None,
) -> Report:
    """Load the history up to `end`, simulate it under `rules` from `start`, and report."""
    loaded = await load_history(session, start=start, end=end, rules=rules, label=label)
    return build(loaded, simulate(loaded.history, seed), seed)


def build(loaded: Loaded, simulated: Outcome, seed: int) -> Report:
    history = loaded.history
    recorded = loaded.reality
    recorded.pools = simulated.pools  # the same replayed availability on both sides
    queues = {q: history.queues[q].rules.name for q in history.active_queues}
    sides = [_side(history, outcome, queues) for outcome in (recorded, simulated)]
    agents = []
    totals = [max(side.assignments, 1) for side in sides]
    shown = set(history.agent_names) | set(sides[0].per_agent) | set(sides[1].per_agent)
    for agent_id in sorted(shown, key=lambda a: (history.agent_names.get(a, ""), a)):
        counts = [side.per_agent.get(agent_id, 0) for side in sides]
        agents.append(
            AgentRow(
                agent_id,
                history.agent_names.get(agent_id, str(agent_id)),
                counts[0],
                counts[1],
                counts[0] / totals[0],
                counts[1] / totals[1],
            )
        )
    owners: dict[uuid.UUID, tuple[uuid.UUID | None, uuid.UUID | None]] = {}
    last = [outcome.assignee(history.end) for outcome in (recorded, simulated)]
    concerned = {i.id for i in history.items if history.start <= i.created_at < history.end}
    for outcome in (recorded, simulated):
        concerned |= {a.item_id for a in outcome.in_period(history.start, history.end)}
    for item in history.items:
        if item.id in concerned:
            owners[item.id] = (last[0].get(item.id), last[1].get(item.id))
    return Report(
        history.start,
        history.end,
        seed,
        history.rules_label,
        sides[0],
        sides[1],
        agents,
        queues,
        owners,
    )


def _side(history: History, outcome: Outcome, queues: dict[uuid.UUID, str]) -> Side:
    start, end = history.start, history.end
    period = outcome.in_period(start, end)
    arrived = [i for i in history.items if start <= i.created_at < end]
    waits: list[float] = []
    still_waiting = closed_unassigned = sla_items = breached = 0
    for item in arrived:
        first = outcome.first_assigned.get(item.id)
        closed = outcome.closed.get(item.id)
        if first is not None and first < end:
            waits.append((first - item.created_at).total_seconds())
        elif closed is not None and closed[1] < end:
            closed_unassigned += 1
        else:
            still_waiting += 1
        if item.due_offset is not None:
            sla_items += 1
            due = item.created_at.timestamp() + item.due_offset
            answered = outcome.first_response.get(item.id)
            if answered is not None and answered < end:
                breached += answered.timestamp() > due
            else:
                breached += due < end.timestamp()
    expired = sum(
        1 for state, at in outcome.closed.values() if state == "expired" and start <= at < end
    )
    fairness: dict[uuid.UUID, float | None] = {}
    for queue_id, name in queues.items():
        fairness[queue_id] = _fairness(history, outcome, queue_id, name, period).max_abs_deviation
    return Side(
        assignments=len(period),
        per_agent=dict(Counter(a.agent_id for a in period)),
        waits=Waits(
            len(arrived),
            len(waits),
            still_waiting,
            closed_unassigned,
            _percentile(waits, 0.5),
            _percentile(waits, 0.9),
        ),
        sla_items=sla_items,
        sla_breached=breached,
        expired=expired,
        offers=dict(outcome.offers),
        fairness=fairness,
    )


def _fairness(
    history: History, outcome: Outcome, queue_id: uuid.UUID, name: str, period: list[Any]
) -> FairnessReport:
    counts = Counter(a.agent_id for a in period if a.queue_id == queue_id)
    total = sum(counts.values())
    names = history.agent_names
    pool = {a: (names.get(a, str(a)), w) for a, w in outcome.pools.get(queue_id, {}).items()}
    return build_report(queue_id, name, total, total, counts, pool, names)


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]
