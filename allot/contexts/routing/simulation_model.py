"""What the what-if simulator replays and what it returns: plain data, no I/O.

simulation_history.py reads these from the database; simulator.py runs them; the report
(simulation_report.py) sets a simulated `Outcome` next to the recorded one.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from allot.contexts.routing.queue_catalog import QueueRules
from allot.contexts.routing.rule_catalog import Rules


@dataclass(frozen=True, slots=True)
class AgentChange:
    """One row of an agent's timeline: its availability and capacity after a change."""

    agent_id: uuid.UUID
    at: datetime
    order: int  # the row's UUIDv7 as an integer: the order rows were written in
    change: str  # created | updated | status | leave | shift
    status: str
    is_active: bool
    on_leave: bool
    off_shift: bool
    capacity: int
    capacity_by_kind: dict[str, Any]
    weight: float
    daily_quota: int | None
    monthly_quota: int | None
    attributes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A queue as the simulation uses it: the engine's rules plus who belongs to it."""

    rules: QueueRules
    member_expression: str
    member_teams: tuple[str, ...]
    reclaim_grace_seconds: int


@dataclass(frozen=True, slots=True)
class ItemPlacement:
    """Where an item goes on intake (rule_catalog.place under the rules being replayed)."""

    queue_id: uuid.UUID | None
    priority: int
    rules: Rules | None = None
    filter_index: int | None = None


@dataclass(frozen=True, slots=True)
class RecordedOffer:
    """An offer as it really went: its agent, how it ended and how long after it was made."""

    agent_id: uuid.UUID
    status: str  # accepted | declined | timed_out | rescinded | pending
    created_at: datetime
    delay: float | None  # seconds from the offer to its end; None while pending


@dataclass(frozen=True, slots=True)
class Episode:
    """One real owner's hold on an item: from its assignment to what ended it."""

    agent_id: uuid.UUID
    start: datetime
    ended: str  # completed | closed (cancelled / expired) | unassigned | open
    duration: float | None  # seconds held, when it ended
    response: float | None  # seconds from the assignment to the first response, if in it


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """A recorded work item and everything about it the simulation replays."""

    id: uuid.UUID
    reference: str
    kind: str
    attributes: dict[str, Any]
    weight: int
    created_at: datetime
    placement: ItemPlacement
    due_offset: float | None  # its first-response window at intake, seconds
    episodes: tuple[Episode, ...] = ()
    offers: tuple[RecordedOffer, ...] = ()
    # Closed by someone outside routing at this moment (cancelled, or completed while nobody
    # owned it): replayed at the same moment whatever the simulation did with the item.
    closed_outside: tuple[datetime, str] | None = None

    @property
    def handling(self) -> float | None:
        """How long its work took: the hold of the episode that completed it."""
        for episode in self.episodes:
            if episode.ended == "completed":
                return episode.duration
        return None

    @property
    def response(self) -> float | None:
        """How long after its assignment the owner who answered first did so."""
        for episode in self.episodes:
            if episode.response is not None:
                return episode.response
        return None


@dataclass(slots=True)
class History:
    """Everything the simulation replays, in order, up to the end of the period."""

    start: datetime  # the period [start, end) the report is about
    end: datetime
    zone: ZoneInfo  # business time zone: quotas count per local day and month
    queues: dict[uuid.UUID, QueueSpec]  # every queue, active or not
    active_queues: tuple[uuid.UUID, ...]  # in catalog order (priority desc, created)
    agent_facts: dict[uuid.UUID, dict[str, Any]]  # name and email, for member expressions
    agent_names: dict[uuid.UUID, str]
    changes: list[AgentChange]  # by (at, order)
    items: list[ItemRecord]  # by (created_at, reference)
    # Each agent's answered offers (status, seconds): what unseen offers are drawn from.
    answers: dict[uuid.UUID, tuple[tuple[str, float], ...]] = field(default_factory=dict)
    rules_label: str = "recorded"

    def queue_by_name(self, name: str) -> QueueSpec | None:
        """queue_catalog.queue_by_name: rules never name a derived queue."""
        for queue_id in self.active_queues:
            rules = self.queues[queue_id].rules
            if rules.name == name and rules.base_queue_id is None:
                return self.queues[queue_id]
        return None


@dataclass(frozen=True, slots=True)
class Assignment:
    item_id: uuid.UUID
    agent_id: uuid.UUID
    queue_id: uuid.UUID | None
    at: datetime


@dataclass(slots=True)
class Outcome:
    """What happened (recorded) or would have happened (simulated) over the period."""

    assignments: list[Assignment] = field(default_factory=list)  # every one, in order
    first_assigned: dict[uuid.UUID, datetime] = field(default_factory=dict)
    first_response: dict[uuid.UUID, datetime] = field(default_factory=dict)
    closed: dict[uuid.UUID, tuple[str, datetime]] = field(default_factory=dict)
    offers: Counter[str] = field(default_factory=Counter)  # offers made in the period, by end
    escalations: int = 0  # escalation events (steps, "escalate" policy) in the period
    # Per active queue, its members who are active and not on leave at the end, with their
    # weights (the fair-share pool, fairness.py).
    pools: dict[uuid.UUID, dict[uuid.UUID, float]] = field(default_factory=dict)

    def in_period(self, start: datetime, end: datetime) -> list[Assignment]:
        return [a for a in self.assignments if start <= a.at < end]

    def assignee(self, end: datetime) -> dict[uuid.UUID, uuid.UUID]:
        """Each item's last owner before `end`."""
        last: dict[uuid.UUID, uuid.UUID] = {}
        for assignment in self.assignments:
            if assignment.at < end:
                last[assignment.item_id] = assignment.agent_id
        return last


def seconds(delta: timedelta) -> float:
    return delta.total_seconds()
