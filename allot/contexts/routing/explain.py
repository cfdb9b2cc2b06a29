"""Explanations: what a decision record says about the candidates and the agents left out.

Pure functions over what the engine read while deciding, so the live engine, the dry run and
the simulator explain alike. Reason codes are stable (the UI and the API translate them):
- `deactivated`, `on_leave`, `off_schedule`, `offline`, `away`: the agent could not take work;
- `quota`: its daily or monthly quota was used up;
- `over_capacity`: not enough spare capacity for the item's weight;
- `declined_before`: declined, let time out or was reclaimed from this very item (never again);
- `busy_elsewhere`: another transaction was placing work with it at that instant (PostgreSQL;
  it gets its own backlog pass right after);
- `not_member`: not in the queue (its attributes or teams do not match the member rule), or,
  in a derived queue, a base-queue member who does not meet the rule's `require` ("skill").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from allot.contexts.routing.decision import Candidate, weighted_load

EXCLUSION_REASONS = (
    "deactivated",
    "on_leave",
    "off_schedule",
    "offline",
    "away",
    "quota",
    "over_capacity",
    "declined_before",
    "busy_elsewhere",
    "not_member",
)
# What each strategy compares, in order (decision.sort_key); the first that differs between the
# chosen agent and the runner-up is the decision's tie-break. `load` compares (load + 1) / weight
# (decision.weighted_load), `virtual_time` the turns taken in the queue for the weight.
STRATEGY_KEYS: dict[str, tuple[str, ...]] = {
    "least_loaded": ("load", "last_assigned_at", "shuffle"),
    "most_available": ("spare", "last_assigned_at", "shuffle"),
    "round_robin": ("virtual_time", "last_assigned_at", "shuffle"),
    "longest_idle": ("idle_since", "last_assigned_at", "shuffle"),
    "score": ("score", "load", "last_assigned_at", "shuffle"),
}
CANDIDATES_KEPT = 5


def exclusion_reasons(row: Any, weight: int, today: date, month: str) -> list[str]:
    """Why an agent (a row with the agent's state columns and its membership's `spare`) cannot
    take an item of this weight now; empty when it can."""
    reasons = []
    if not row.is_active:
        reasons.append("deactivated")
    if row.on_leave:
        reasons.append("on_leave")
    if row.off_shift:
        reasons.append("off_schedule")
    if row.status != "available":
        reasons.append(row.status if row.status in ("offline", "away") else "offline")
    day_used = row.daily_quota is not None and row.quota_day == today
    if day_used and row.assigned_in_day >= row.daily_quota:
        reasons.append("quota")
    month_used = row.monthly_quota is not None and row.quota_month == month
    if month_used and row.assigned_in_month >= row.monthly_quota and "quota" not in reasons:
        reasons.append("quota")
    if row.capacity - row.load < weight:
        reasons.append("over_capacity")
    return reasons


def candidate_facts(
    candidates: Sequence[Candidate], scores: dict[Any, float] | None = None
) -> list[dict[str, Any]]:
    """The best candidates as stored in a decision: the values the strategies compare."""
    facts = []
    for rank, c in enumerate(candidates[:CANDIDATES_KEPT], start=1):
        fact: dict[str, Any] = {
            "agent_id": str(c.agent_id),
            "rank": rank,
            "load": c.load,
            "spare": c.spare,
            "last_assigned_at": c.last_assigned_at.isoformat(),
            "idle_since": c.idle_since.isoformat(),
            "shuffle": round(c.shuffle, 6),
            "weight": c.weight,
            "virtual_time": c.virtual_time,
        }
        if scores is not None and c.agent_id in scores:
            fact["score"] = scores[c.agent_id]
        facts.append(fact)
    return facts


def tie_break(strategy: str | None, facts: Sequence[dict[str, Any]]) -> str | None:
    """The first compared value that separated the chosen candidate from the runner-up (the
    strategy's own measure when that already differed), or None with a single candidate."""
    if strategy is None or len(facts) < 2:
        return None
    first, second = facts[0], facts[1]
    for key in STRATEGY_KEYS.get(strategy, ()):
        if _compared(first, key) != _compared(second, key):
            return key
    return None


def _compared(fact: dict[str, Any], key: str) -> Any:
    if key == "load" and "load" in fact:  # decisions logged before weights counted have none
        return weighted_load(fact["load"], fact.get("weight", 1.0))
    return fact.get(key)
