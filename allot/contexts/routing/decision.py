"""The pure decision core: given candidates, who gets the item. No I/O, no clock, no randomness
of its own, so the live engine and the what-if simulator (next issue) decide identically.

Strategies (all break remaining ties by least recently assigned, then a per-assignment draw
stored with the candidate, so no list order ever wins a tie):
- least_loaded (default): lowest load across all queues (items' weights summed) for the
  agent's fair-share weight (`weighted_load`): at weight 2 an agent is "as loaded" as a
  weight-1 agent holding half as much, so it carries twice the work;
- most_available: most spare capacity (weight not used: room is a fact about capacity);
- round_robin: weighted round robin (stride scheduling), the member whose next turn ends
  earliest in the queue's virtual time first, then least recently assigned. Each reservation
  in the queue moves the member on by `vt_step(weight)` (1/weight of a turn), and its next turn
  ends one step later (`Candidate.virtual_time`, stored as the membership's `turn_end`): weight
  2 gets two turns to weight 1's one. Ordering by the end of the next turn rather than its
  start spreads a heavy agent's turns evenly from the first item (docs/routing-fairness.md);
- longest_idle: idle (no load) the longest; busy agents last (all equally "busy", so among
  them the least recently assigned; weight not used);
- score: highest score from a registered scorer, then least loaded (as least_loaded).

With every weight 1, least_loaded's measure orders as the load itself ((n + 1) / 1.0 orders as
n), so the default strategy decides exactly as it did before weights were used.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from allot.kernel.errors import ValidationFailed


@dataclass(frozen=True, slots=True)
class Candidate:
    agent_id: uuid.UUID
    load: int
    spare: int
    last_assigned_at: datetime
    idle_since: datetime
    shuffle: float
    attributes: dict[str, Any] | None = None
    kind_capped: bool = False
    weight: float = 1.0
    virtual_time: int = 0  # round robin: where its next turn in the queue ends (`turn_end`)


# One turn of a weight-1 agent in virtual time. An integer clock (no float drift between the
# engine, the batch planner and the simulator), divisible by every whole weight up to 16, so
# whole weights share turns exactly (weight 3 adds 240240 per turn, weight 1 720720).
VT_UNIT = 720_720


def vt_step(weight: float) -> int:
    """How far one reservation moves an agent of this weight along a queue's virtual time."""
    return max(1, round(VT_UNIT / weight))


def weighted_load(load: int, weight: float) -> float:
    """least_loaded's measure (stored as `weighted_load`, computed here only): the load the agent
    would carry with one more item, for its weight. "One more" makes the order the end of the
    agent's next share rather than its start, which spreads a heavy agent's items evenly (as
    round robin's virtual time does); with every weight 1 it orders exactly as the load."""
    return (load + 1) / weight


def tie_draw(agent_id: uuid.UUID, last_assigned_at: datetime, load: int) -> float:
    """The last tie-break, drawn anew at every reservation: uniform in [0, 1) like a random draw,
    but a function of the agent and its state after the reservation, so the what-if simulator
    replaying the same history draws the same values (a random draw could not be replayed)."""
    digest = hashlib.blake2b(
        f"{agent_id}|{last_assigned_at.isoformat()}|{load}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") / 2**64


Scorer = Callable[[dict[str, Any], Candidate], float]
_scorers: dict[str, Scorer] = {}


def register_scorer(name: str, scorer: Scorer) -> None:
    """Plug in a scoring function (item attributes, candidate) -> higher is better."""
    _scorers[name] = scorer


def get_scorer(name: str | None) -> Scorer:
    if name is None or name not in _scorers:
        raise ValidationFailed.on("body.scorer", f"Unknown scorer {name!r}", "unknown_scorer")
    return _scorers[name]


def _language_match(item: dict[str, Any], candidate: Candidate) -> float:
    """Example scorer: prefer agents speaking the item's language, then the less loaded."""
    languages = (candidate.attributes or {}).get("languages") or []
    return (1.0 if item.get("language") in languages else 0.0) - candidate.load * 0.01


register_scorer("language_match", _language_match)


def sort_key(strategy: str) -> Callable[[Candidate], tuple[Any, ...]]:
    if strategy == "least_loaded":
        return lambda c: (weighted_load(c.load, c.weight), c.last_assigned_at, c.shuffle)
    if strategy == "most_available":
        return lambda c: (-c.spare, c.last_assigned_at, c.shuffle)
    if strategy == "round_robin":
        return lambda c: (c.virtual_time, c.last_assigned_at, c.shuffle)
    if strategy == "longest_idle":
        return lambda c: (c.idle_since, c.last_assigned_at, c.shuffle)
    raise ValueError(f"No index order for strategy {strategy!r}")


def rank(
    strategy: str,
    candidates: Sequence[Candidate],
    item_attributes: dict[str, Any] | None = None,
    scorer: str | None = None,
) -> list[Candidate]:
    """Candidates best first. Callers try them in this order until a reservation succeeds."""
    if strategy == "score":
        score = get_scorer(scorer)
        attributes = item_attributes or {}
        return sorted(
            candidates,
            key=lambda c: (
                -score(attributes, c),
                weighted_load(c.load, c.weight),
                c.last_assigned_at,
                c.shuffle,
            ),
        )
    return sorted(candidates, key=sort_key(strategy))
