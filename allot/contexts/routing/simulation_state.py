"""The what-if simulator's state and clock: agents, items and offers as the engine keeps them,
the event queue, the timers, and everything about agents (their timeline rows, membership,
reservations and releases). The routing of items is in simulator.py, which builds on this."""

from __future__ import annotations

import heapq
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from allot.contexts.routing import membership
from allot.contexts.routing.decision import tie_draw, vt_step
from allot.contexts.routing.models import BUSY, EPOCH
from allot.contexts.routing.repository import quota_ok
from allot.contexts.routing.rule_catalog import Rules
from allot.contexts.routing.simulation_model import (
    AgentChange,
    History,
    ItemRecord,
    Outcome,
)

# What happens first at one instant: timers (in the order they were made, as the timer runner
# fires them), then operations replayed from the record (answers, first responses,
# completions), then recorded inputs (timeline rows, arrivals, cancellations, by their ids).
TIMER, OPERATION, RECORDED = 0, 1, 2


@dataclass(slots=True, eq=False)
class SimAgent:
    id: uuid.UUID
    facts: dict[str, Any]
    status: str = "offline"
    is_active: bool = True
    on_leave: bool = False
    off_shift: bool = False
    capacity: int = 0
    weight: float = 1.0
    daily_quota: int | None = None
    monthly_quota: int | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    kind_caps: dict[str, int] = field(default_factory=dict)
    kind_loads: dict[str, int] = field(default_factory=dict)
    load: int = 0
    last_assigned_at: datetime | None = None
    idle_since: datetime | None = None
    quota_day: date | None = None
    assigned_in_day: int = 0
    quota_month: str | None = None
    assigned_in_month: int = 0
    queues: list[uuid.UUID] = field(default_factory=list)  # membership, active queues
    kind_capped: set[uuid.UUID] = field(default_factory=set)
    eligible: bool = False  # the membership mirror's, as of its last sync (I4)
    shuffle: float = 0.0
    vtime: dict[uuid.UUID, int] = field(default_factory=dict)  # per queue: virtual_time
    fresh: set[uuid.UUID] = field(default_factory=set)  # rows inserted since the last sync
    holding: dict[uuid.UUID, SimItem] = field(default_factory=dict)  # assigned to it
    pending: dict[int, SimOffer] = field(default_factory=dict)  # its open offers, oldest first

    @property
    def can_take_work(self) -> bool:
        return (
            self.status == "available"
            and self.is_active
            and not self.on_leave
            and (not self.off_shift)
        )


@dataclass(slots=True, eq=False)
class SimItem:
    rec: ItemRecord
    queue_id: uuid.UUID | None
    priority: int
    rules: Rules | None
    rule_filter: int | None
    due: datetime | None
    steps_done: int = 0
    state: str = "new"
    owner: uuid.UUID | None = None
    first_response_at: datetime | None = None
    pending: dict[uuid.UUID, SimOffer] = field(default_factory=dict)
    never: set[uuid.UUID] = field(default_factory=set)  # declined, timed out, reclaimed
    episode: int = 0
    held: Counter[uuid.UUID] = field(default_factory=Counter)
    offered: Counter[uuid.UUID] = field(default_factory=Counter)
    backlog_key: tuple[Any, ...] | None = None

    def excludes(self, agent_id: uuid.UUID) -> bool:
        return agent_id in self.never or agent_id in self.pending


@dataclass(slots=True, eq=False)
class SimOffer:
    item: SimItem
    agent_id: uuid.UUID
    created_at: datetime
    number: int
    status: str = "pending"


class SimulationBase:
    def __init__(self, history: History, seed: int = 0) -> None:
        self.h = history
        self.rng = random.Random(seed)
        self.now = min(
            [c.at for c in history.changes]
            + [i.created_at for i in history.items]
            + [history.start]
        )
        self.agents: dict[uuid.UUID, SimAgent] = {}
        self.members: dict[uuid.UUID, list[uuid.UUID]] = {q: [] for q in history.active_queues}
        self.backlog: dict[uuid.UUID, list[tuple[Any, ...]]] = {}
        self.items: dict[uuid.UUID, SimItem] = {}
        self.offers: list[SimOffer] = []
        self.out = Outcome()
        self._events: list[tuple[Any, ...]] = []
        self._seq = 0
        self._round = -1  # the timer batch being fired (-1: none)
        self._timers: dict[str, int] = {}  # pending keyed timers: key -> version
        self._timer_order: dict[str, int] = {}  # a keyed timer keeps its place once made
        pool = sorted(a for answers in history.answers.values() for a in answers)
        self._all_answers = tuple(pool)

    # -- the event loop -------------------------------------------------------------------
    def run(self) -> Outcome:
        for change in self.h.changes:
            self._push(change.at, RECORDED, change.order, "change", (change,))
        for group in _arrival_groups(self.h.items):
            first = group[0]
            self._push(first.created_at, RECORDED, min(i.id.int for i in group), "arrive", (group,))
            for item in group:
                if item.closed_outside is not None:
                    at, state = item.closed_outside
                    self._push(at, RECORDED, 1 << 128, "close", (item.id, state))
        while self._events:
            at, cls, round_, _order, _seq, kind, args = heapq.heappop(self._events)
            if at >= self.h.end:
                break
            self.now = max(self.now, at)
            self._round = round_ if cls == TIMER else -1
            getattr(self, f"_on_{kind}")(*args)
        self._finish()
        return self.out

    def _push(
        self, at: datetime, cls: int, order: int, kind: str, args: tuple[Any, ...], round_: int = 0
    ) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, cls, round_, order, self._seq, kind, args))

    def _later(self, at: datetime, kind: str, *args: Any) -> None:
        self._push(max(at, self.now), OPERATION, 0, kind, args)

    def _timer(self, key: str, at: datetime, kind: str, *args: Any) -> None:
        """A keyed timer, replaced by the next one with its key (timers.schedule). Timers fire
        as the runner fires them: due ones in (due, id) order, a batch at a time; one made due
        while a batch fires goes in the next batch; a key keeps its id (its place) while its row
        exists, that is unless it is cancelled while pending."""
        self._seq += 1
        order = self._timer_order.setdefault(key, self._seq)
        self._timers[key] = self._seq
        at = max(at, self.now)
        self._push(at, TIMER, order, "timer", (key, self._seq, kind, args), self._round_at(at))

    def _round_at(self, at: datetime) -> int:
        return self._round + 1 if at <= self.now and self._round >= 0 else 0

    def _cancel(self, key: str) -> None:
        if self._timers.pop(key, None) is not None:
            self._timer_order.pop(key, None)

    def _on_timer(self, key: str, version: int, kind: str, args: tuple[Any, ...]) -> None:
        if self._timers.get(key) != version:
            return  # replaced or cancelled
        del self._timers[key]
        getattr(self, f"_fire_{kind}")(*args)

    def day(self) -> tuple[date, str]:
        local = self.now.astimezone(self.h.zone)
        return local.date(), local.strftime("%Y-%m")

    # -- agents -----------------------------------------------------------------------------
    def _on_change(self, change: AgentChange) -> None:
        agent = self.agents.get(change.agent_id)
        if agent is None:
            facts = self.h.agent_facts.get(change.agent_id, {})
            agent = self.agents[change.agent_id] = SimAgent(change.agent_id, facts)
            agent.idle_since = self.now
        for name in (
            "status",
            "is_active",
            "on_leave",
            "off_shift",
            "capacity",
            "weight",
            "daily_quota",
            "monthly_quota",
            "attributes",
        ):
            setattr(agent, name, getattr(change, name))
        if change.change in ("created", "updated"):
            self._sync_kind_caps(agent, change.capacity_by_kind)
            self._refresh_membership(agent)
        if change.change == "created":
            if agent.status == "available":
                self.fill_agent(agent)
            return
        self.sync(agent)
        if agent.can_take_work:
            self._cancel(f"reclaim:{agent.id}")
            self.fill_agent(agent)
            return
        for offer in list(agent.pending.values()):
            self.end_offer(offer, "rescinded", reroute=True)
        gone = agent.status == "offline" or agent.on_leave or not agent.is_active
        if gone and self._open_items_of(agent):
            graces = [self.h.queues[q].reclaim_grace_seconds for q in agent.queues]
            grace = min(graces) if graces else 300
            self._timer(
                f"reclaim:{agent.id}", self.now + timedelta(seconds=grace), "reclaim", agent
            )

    def _sync_kind_caps(self, agent: SimAgent, caps: dict[str, Any]) -> None:
        for kind, cap in caps.items():
            if kind not in agent.kind_caps:
                agent.kind_loads[kind] = sum(
                    i.rec.weight for i in self._open_items_of(agent) if i.rec.kind == kind
                )
            agent.kind_caps[kind] = int(cap)
        for kind in [k for k in agent.kind_caps if k not in caps]:
            del agent.kind_caps[kind], agent.kind_loads[kind]

    def _refresh_membership(self, agent: SimAgent) -> None:
        """membership.refresh_agent: the agent's queues anew, its rows drawn anew."""
        facts = SimpleNamespace(attributes=agent.attributes, **self._name_and_email(agent))
        queues = []
        for queue_id in self.h.active_queues:
            spec = self.h.queues[queue_id]
            shape = SimpleNamespace(
                member_expression=spec.member_expression,
                member_teams=list(spec.member_teams),
                require_expression=spec.rules.require,
            )
            if membership.is_member(shape, facts):  # type: ignore[arg-type]
                queues.append(queue_id)
        for queue_id in agent.queues:
            self.members[queue_id].remove(agent.id)
        # membership.refresh_agent keeps a row's virtual time (and its mirrored eligibility)
        # in the queues it stays in; a new row starts ineligible at 0.
        agent.vtime = {q: agent.vtime[q] for q in queues if q in agent.vtime}
        agent.fresh = {q for q in queues if q not in agent.vtime}
        for queue_id in agent.fresh:
            agent.vtime[queue_id] = 0
        agent.queues = queues
        agent.kind_capped = {
            q for q in queues if set(agent.kind_caps) & set(self.h.queues[q].rules.work_kinds)
        }
        for queue_id in queues:
            self.members[queue_id].append(agent.id)
        agent.shuffle = tie_draw(agent.id, agent.last_assigned_at or EPOCH, agent.load)
        self.sync(agent)

    def _name_and_email(self, agent: SimAgent) -> dict[str, Any]:
        return {"name": agent.facts.get("name"), "email": agent.facts.get("email")}

    def sync(
        self,
        agent: SimAgent,
        *,
        reshuffle: bool = False,
        advance: tuple[uuid.UUID | None, int] | None = None,
    ) -> None:
        """mirror.sync_memberships: the mirror selection reads (I4), with the virtual time:
        a row turning eligible starts at the lowest other eligible member of its queue; the
        reserving queue's row (`advance`) then moves on."""
        today, month = self.day()
        spare = max(agent.capacity - agent.load, 0)
        eligible = agent.can_take_work and spare > 0 and quota_ok(agent, today, month)
        if eligible:
            for queue_id in agent.queues:
                if agent.eligible and queue_id not in agent.fresh:
                    continue
                nearest = min(
                    (
                        (
                            self.turn_end(self.agents[other], queue_id),
                            self.agents[other].vtime[queue_id],
                            n,
                        )
                        for n, other in enumerate(self.members[queue_id])
                        if other != agent.id and self.agents[other].eligible
                    ),
                    default=None,
                )
                lowest = (
                    None
                    if nearest is None
                    else self.agents[self.members[queue_id][nearest[2]]].vtime[queue_id]
                )
                if lowest is not None and lowest > agent.vtime[queue_id]:
                    agent.vtime[queue_id] = lowest
        agent.fresh.clear()
        agent.eligible = eligible
        if advance is not None and advance[0] in agent.vtime:
            agent.vtime[advance[0]] += advance[1]
        if reshuffle:
            agent.shuffle = tie_draw(agent.id, agent.last_assigned_at or EPOCH, agent.load)

    @staticmethod
    def turn_end(agent: SimAgent, queue_id: uuid.UUID) -> int:
        """The membership's `turn_end`: where its next turn ends (weighted round robin)."""
        return agent.vtime[queue_id] + vt_step(agent.weight)

    def _open_items_of(self, agent: SimAgent) -> list[SimItem]:
        return sorted(agent.holding.values(), key=lambda i: i.rec.id)

    def reserve(
        self, agent: SimAgent, item: SimItem, *, counts: bool, kind_capped: bool | None
    ) -> bool:
        """repository.reserve_capacity (I1) and the mirror's re-draw."""
        kind, weight = item.rec.kind, item.rec.weight
        kind_reserved = False
        if kind_capped is not False and kind in agent.kind_caps:
            if agent.kind_loads[kind] + weight > agent.kind_caps[kind]:
                return False
            agent.kind_loads[kind] += weight
            kind_reserved = True
        today, month = self.day()
        fits = agent.load + weight <= agent.capacity and agent.can_take_work
        if not fits or not quota_ok(agent, today, month):
            if kind_reserved:
                agent.kind_loads[kind] -= weight
            return False
        agent.load += weight
        agent.last_assigned_at, agent.idle_since = self.now, BUSY
        if counts:
            self.count_assignments(agent, 1, sync=False)
        self.sync(agent, reshuffle=True, advance=(item.queue_id, vt_step(agent.weight)))
        return True

    def count_assignments(self, agent: SimAgent, count: int, *, sync: bool = True) -> None:
        today, month = self.day()
        in_day = agent.assigned_in_day if agent.quota_day == today else 0
        in_month = agent.assigned_in_month if agent.quota_month == month else 0
        agent.assigned_in_day, agent.quota_day = in_day + count, today
        agent.assigned_in_month, agent.quota_month = in_month + count, month
        if sync:
            self.sync(agent)

    def release(self, agent: SimAgent, item: SimItem) -> None:
        if item.rec.kind in agent.kind_loads:
            agent.kind_loads[item.rec.kind] -= item.rec.weight
        if agent.load < item.rec.weight:
            raise RuntimeError(f"Simulated load of {agent.id} below {item.rec.weight}")
        agent.load -= item.rec.weight
        if agent.load == 0:
            agent.idle_since = self.now
        self.sync(agent)

    # -- what simulator.py provides -----------------------------------------------------------
    def fill_agent(self, agent: SimAgent) -> None:
        raise NotImplementedError

    def end_offer(self, offer: SimOffer, status: str, *, reroute: bool) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError


def _arrival_groups(items: list[ItemRecord]) -> list[list[ItemRecord]]:
    """Items arriving at one instant, together (one `submit_many` batch; see the module doc)."""
    groups: list[list[ItemRecord]] = []
    for item in items:
        if groups and groups[-1][0].created_at == item.created_at:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups
