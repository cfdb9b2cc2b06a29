"""Routing tables (prefix `routing_`).

Invariants kept by the engine (see engine.py for where each is enforced):
- I1 capacity: for every agent, `load` = the summed weight of its pending offers and assigned
  items, and `load <= capacity` always (reserved by conditional UPDATE, never read-then-write).
- I2 ownership: an item has at most one owner (`owner_agent_id` set only by the conditional
  claim `state IN ('waiting','offered') -> 'assigned'`), and is in exactly one state.
- I3 offers: an item has pending offers only while `state = 'offered'`; an agent who declined or
  let an offer time out is never offered that item again (`routing_offers` keeps the history).
- I4 membership rows mirror their agent (`eligible`, `load`, `spare`, `weight`,
  `weighted_load`, `last_assigned_at`, `idle_since`) in the same transaction as every change to
  the agent, so selection is one ordered index lookup per queue instead of a scan or COUNT per
  agent. `virtual_time` / `turn_end` are the membership's own (weighted round robin,
  decision.py): `virtual_time` grows by `decision.vt_step(weight)` with each reservation in that
  queue and `turn_end` = `virtual_time` + `vt_step(weight)`; a member that becomes eligible again
  starts no earlier than the queue's next member to be served (no burst on return).
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from allot.kernel.clock import utcnow
from allot.kernel.db import Base, IdMixin, TimestampMixin

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BUSY = datetime(2999, 12, 31, tzinfo=UTC)
AGENT_STATUSES = ("available", "away", "offline")
RULE_SET_STATUSES = ("draft", "active", "retired")
DECISION_TRIGGERS = (
    "submitted", "rerouted", "capacity_freed", "escalated", "fallback", "accepted"
)  # fmt: skip
ITEM_STATES = ("waiting", "offered", "assigned", "completed", "cancelled", "expired")
OPEN_ITEM_STATES = ("waiting", "offered", "assigned")
OFFER_STATUSES = ("pending", "accepted", "declined", "timed_out", "rescinded")
STRATEGIES = ("least_loaded", "most_available", "round_robin", "longest_idle", "score")
OFFER_MODES = ("direct", "offer", "broadcast")


class Agent(IdMixin, TimestampMixin, Base):
    __tablename__ = "routing_agents"

    user_id: Mapped[uuid.UUID | None] = mapped_column(unique=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    # skills, languages, regions, teams ... matched by queue member expressions
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    capacity: Mapped[int] = mapped_column(Integer, default=5)
    # Optional caps per work kind, e.g. {"lead": 3}; the total capacity still applies.
    capacity_by_kind: Mapped[dict[str, Any]] = mapped_column(default=dict)
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    status: Mapped[str] = mapped_column(String(16), default="offline")
    status_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_heartbeat_at: Mapped[datetime | None]
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    on_leave: Mapped[bool] = mapped_column(Boolean, default=False)
    off_shift: Mapped[bool] = mapped_column(Boolean, default=False)
    load: Mapped[int] = mapped_column(Integer, default=0)
    last_assigned_at: Mapped[datetime | None]
    idle_since: Mapped[datetime | None] = mapped_column(default=utcnow)
    missed_offers: Mapped[int] = mapped_column(Integer, default=0)
    # {"timezone": "Europe/Moscow", "weekly": {"mon": [["09:00","18:00"]], ...},
    #  "holidays": ["2026-01-01"]}; empty means always on shift.
    schedule: Mapped[dict[str, Any]] = mapped_column(default=dict)
    daily_quota: Mapped[int | None]
    monthly_quota: Mapped[int | None]
    quota_day: Mapped[date | None]
    assigned_in_day: Mapped[int] = mapped_column(Integer, default=0)
    quota_month: Mapped[str | None] = mapped_column(String(7))
    assigned_in_month: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_routing_agents_status", "status"),)

    @property
    def can_take_work(self) -> bool:
        return (
            self.is_active
            and not self.on_leave
            and not self.off_shift
            and (self.status == "available")
        )


class AgentKindLoad(Base):
    """Per-kind capacity counters, present only for kinds an agent has a cap for (I1 per kind)."""

    __tablename__ = "routing_agent_kind_loads"

    agent_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    capacity: Mapped[int] = mapped_column(Integer)
    load: Mapped[int] = mapped_column(Integer, default=0)


class AgentLeave(IdMixin, Base):
    __tablename__ = "routing_agent_leaves"

    agent_id: Mapped[uuid.UUID] = mapped_column(index=True)
    starts_on: Mapped[date]
    ends_on: Mapped[date]
    reason: Mapped[str | None] = mapped_column(String(200))


class Queue(IdMixin, TimestampMixin, Base):
    __tablename__ = "routing_queues"

    name: Mapped[str] = mapped_column(String(200), unique=True)
    work_kinds: Mapped[list[Any]] = mapped_column(default=list)
    # Members: agents whose attributes match the expression, or who are in one of the teams.
    member_expression: Mapped[str] = mapped_column(Text, default="")
    member_teams: Mapped[list[Any]] = mapped_column(default=list)
    strategy: Mapped[str] = mapped_column(String(32), default="least_loaded")
    scorer: Mapped[str | None] = mapped_column(String(100))
    offer_mode: Mapped[str] = mapped_column(String(16), default="direct")
    offer_timeout_seconds: Mapped[int] = mapped_column(Integer, default=120)
    broadcast_size: Mapped[int] = mapped_column(Integer, default=3)
    auto_away_after_misses: Mapped[int | None]
    first_response_seconds: Mapped[int | None]
    reclaim_grace_seconds: Mapped[int] = mapped_column(Integer, default=300)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # A derived queue (rules.py `require`): the members of `base_queue_id` who also satisfy
    # `require_expression`, materialised like any queue's; its other settings copy the base's.
    base_queue_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    require_expression: Mapped[str] = mapped_column(Text, default="")


class QueueMember(Base):
    """An agent's standing in one queue, mirrored from the agent row for indexed selection."""

    __tablename__ = "routing_queue_members"

    queue_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    agent_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    eligible: Mapped[bool] = mapped_column(Boolean, default=False)
    load: Mapped[int] = mapped_column(Integer, default=0)
    spare: Mapped[int] = mapped_column(Integer, default=0)
    # Never NULL, so one ascending index order serves SQLite and PostgreSQL alike (they disagree
    # on where NULLs sort): never-assigned agents carry EPOCH, busy agents carry BUSY.
    last_assigned_at: Mapped[datetime] = mapped_column(default=lambda: EPOCH)
    idle_since: Mapped[datetime] = mapped_column(default=lambda: EPOCH)
    # Random, re-drawn on every assignment: the last tie-break, so no list order wins ties.
    shuffle: Mapped[float] = mapped_column(Float, default=0.0)
    # The agent caps one of this queue's work kinds: reservations check routing_agent_kind_loads.
    kind_capped: Mapped[bool] = mapped_column(Boolean, default=False)
    # Fair-share weight (mirrored), and least_loaded's measure, (load + 1) / weight (decision.py).
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    weighted_load: Mapped[float] = mapped_column(Float, default=0.0)
    # Weighted round robin (decision.py): where this member's turns taken in the queue have
    # brought it (each worth vt_step(weight)), and where its next turn ends (the order).
    virtual_time: Mapped[int] = mapped_column(BigInteger, default=0)
    turn_end: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (
        Index("ix_routing_members_agent", "agent_id"),
        Index(
            "ix_routing_members_least_loaded",
            "queue_id",
            "eligible",
            "weighted_load",
            "last_assigned_at",
            "shuffle",
        ),
        Index(
            "ix_routing_members_most_available",
            "queue_id",
            "eligible",
            "spare",
            "last_assigned_at",
            "shuffle",
        ),
        Index(
            "ix_routing_members_round_robin",
            "queue_id",
            "eligible",
            "turn_end",
            "last_assigned_at",
            "shuffle",
        ),
        Index(
            "ix_routing_members_longest_idle",
            "queue_id",
            "eligible",
            "idle_since",
            "last_assigned_at",
            "shuffle",
        ),
    )


class WorkItem(IdMixin, Base):
    __tablename__ = "routing_work_items"

    reference: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(64))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    weight: Mapped[int] = mapped_column(Integer, default=1)
    queue_id: Mapped[uuid.UUID | None]
    state: Mapped[str] = mapped_column(String(16), default="waiting")
    owner_agent_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    enqueued_at: Mapped[datetime] = mapped_column(default=utcnow)
    assigned_at: Mapped[datetime | None]
    first_response_at: Mapped[datetime | None]
    first_response_due_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    times_routed: Mapped[int] = mapped_column(Integer, default=0)
    # The rule set version and filter that placed the item (None: no rules, or none matched),
    # and how many of that filter's time steps it has been through (rules.py).
    rule_set_id: Mapped[uuid.UUID | None]
    rule_filter: Mapped[int | None] = mapped_column(Integer)
    steps_done: Mapped[int] = mapped_column(Integer, default=0)
    # The priority the submitter gave (rules and ageing change `priority`): what the what-if
    # simulator replays against other rules.
    submitted_priority: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        # The backlog head per queue: highest priority, then oldest (id breaks ties), in the
        # index's own order, so the head is read without sorting the backlog.
        Index(
            "ix_routing_items_waiting",
            "queue_id",
            text("priority DESC"),
            "enqueued_at",
            "id",
            postgresql_where=text("state = 'waiting'"),
            sqlite_where=text("state = 'waiting'"),
        ),
        Index("ix_routing_items_state", "state"),
        # Reports and the what-if simulator read items by when they came in.
        Index("ix_routing_items_kind_created", "kind", "created_at"),
    )


class Offer(IdMixin, Base):
    __tablename__ = "routing_offers"

    item_id: Mapped[uuid.UUID]
    agent_id: Mapped[uuid.UUID]
    status: Mapped[str] = mapped_column(String(16), default="pending")
    weight: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    responded_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_routing_offers_item_agent", "item_id", "agent_id"),
        Index("ix_routing_offers_agent_status", "agent_id", "status"),
        # I3: at most one live offer per (item, agent).
        Index(
            "uq_routing_offers_pending",
            "item_id",
            "agent_id",
            unique=True,
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )


class RuleSet(IdMixin, Base):
    """One version of the routing rules (rules.py). Versions are never edited: a change is a new
    version; activating one retires the active one (the partial unique index keeps one)."""

    __tablename__ = "routing_rule_sets"

    version: Mapped[int] = mapped_column(Integer, unique=True)
    name: Mapped[str] = mapped_column(String(200))
    comment: Mapped[str | None] = mapped_column(Text)
    definition: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="draft")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_label: Mapped[str] = mapped_column(String(255), default="system")
    activated_at: Mapped[datetime | None]

    __table_args__ = (
        Index(
            "uq_routing_rule_sets_active",
            "status",
            unique=True,
            postgresql_where=text("status = 'active'"),
            sqlite_where=text("status = 'active'"),
        ),
    )


class Decision(IdMixin, Base):
    """Why an item went where it went (explain.py): one row per routing decision, append-only."""

    __tablename__ = "routing_decisions"

    item_id: Mapped[uuid.UUID]
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    trigger: Mapped[str] = mapped_column(String(24))
    outcome: Mapped[str] = mapped_column(String(16))
    queue_id: Mapped[uuid.UUID | None]
    rule_set_id: Mapped[uuid.UUID | None]
    rule_filter: Mapped[str | None] = mapped_column(String(100))
    strategy: Mapped[str | None] = mapped_column(String(32))
    agent_ids: Mapped[list[Any]] = mapped_column(default=list)  # chosen (assigned / offered)
    # The best candidates as ranked, each with the values the strategy compared.
    candidates: Mapped[list[Any]] = mapped_column(default=list)
    tie_break: Mapped[str | None] = mapped_column(String(32))
    policy: Mapped[str | None] = mapped_column(String(16))  # when nobody was available
    snapshot_id: Mapped[uuid.UUID | None]
    note: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        Index("ix_routing_decisions_item", "item_id", "occurred_at"),
        # Fairness reads each queue's latest assignments (fairness.py).
        Index(
            "ix_routing_decisions_assigned",
            "queue_id",
            "occurred_at",
            "id",
            postgresql_where=text("outcome = 'assigned'"),
            sqlite_where=text("outcome = 'assigned'"),
        ),
    )


class PoolSnapshot(IdMixin, Base):
    """The members of a queue who could not take work at a moment, with the reasons; shared by
    every decision made from that reading (a batch places many items from one)."""

    __tablename__ = "routing_pool_snapshots"

    queue_id: Mapped[uuid.UUID]
    taken_at: Mapped[datetime] = mapped_column(default=utcnow)
    excluded: Mapped[list[Any]] = mapped_column(default=list)  # [{"agent_id", "reasons": [...]}]
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)


class AgentTimelineEntry(IdMixin, Base):
    """Append-only: an agent's availability and capacity right after each change (creation,
    edit, status, leave, shift), written by agent_service.py in the transaction of the change.
    The agents table keeps only the present; the what-if simulator (simulator.py) replays who
    could take how much work when from these rows. `change` says what kind of change it was:
    `created` and `updated` also re-draw the agent's tie-break (membership.refresh_agent)."""

    __tablename__ = "routing_agent_timeline"

    agent_id: Mapped[uuid.UUID]
    at: Mapped[datetime]
    change: Mapped[str] = mapped_column(String(16))  # created | updated | status | leave | shift
    status: Mapped[str] = mapped_column(String(16))
    is_active: Mapped[bool] = mapped_column(Boolean)
    on_leave: Mapped[bool] = mapped_column(Boolean)
    off_shift: Mapped[bool] = mapped_column(Boolean)
    capacity: Mapped[int] = mapped_column(Integer)
    capacity_by_kind: Mapped[dict[str, Any]] = mapped_column(default=dict)
    weight: Mapped[float] = mapped_column(Float)
    daily_quota: Mapped[int | None]
    monthly_quota: Mapped[int | None]
    # Skills, languages, teams ...: what queue membership is computed from.
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (
        Index("ix_routing_agent_timeline_agent", "agent_id", "at"),
        Index("ix_routing_agent_timeline_at", "at"),
    )
