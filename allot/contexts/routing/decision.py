"""The pure decision core: given candidates, who gets the item. No I/O, no clock, no randomness
of its own, so the live engine and the what-if simulator (next issue) decide identically.

Strategies (all break remaining ties by least recently assigned, then a per-assignment draw
stored with the candidate, so no list order ever wins a tie):
- least_loaded (default): lowest weighted load across all queues;
- most_available: most spare capacity;
- round_robin: least recently assigned;
- longest_idle: idle (no load) the longest; busy agents last (all equally "busy", so among
  them the least recently assigned);
- score: highest score from a registered scorer, then least loaded.
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
        return lambda c: (c.load, c.last_assigned_at, c.shuffle)
    if strategy == "most_available":
        return lambda c: (-c.spare, c.last_assigned_at, c.shuffle)
    if strategy == "round_robin":
        return lambda c: (c.last_assigned_at, c.shuffle)
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
            key=lambda c: (-score(attributes, c), c.load, c.last_assigned_at, c.shuffle),
        )
    return sorted(candidates, key=sort_key(strategy))
