"""The what-if simulator: recorded intake, agent availability, offer answers and handling times
replayed against a rule set, deterministically, with the live engine's decision core.

A discrete-event simulation of engine.py / closing.py / placement.py / tasks.py over memory:
agents carry the columns the engine keeps (load, last assignment, idle since, quotas, per-kind
loads) and the membership mirror it selects from (`eligible` as of the last sync, the tie-break
draw), and every choice goes through `decision.rank` / `decision.sort_key` / `decision.tie_draw`
and the pure rule helpers (rules.py, escalation.rule_of) — nothing of the strategies' order is
written again here. Replaying history under the rules that really placed each item therefore
gives each item the owner it really got (tests/contexts/routing/test_simulator.py).

What is replayed, what is drawn and what is assumed: docs/routing-simulator.md. In short:
- items arrive at their `created_at` (items sharing one instant arrived as one `submit_many`
  batch, taken in reference order), with the kind, attributes, submitted priority and weight
  recorded, placed by the rules given (history from `start` on) or by the rules that placed
  them (before `start`: the simulation replays the whole history, so the state at `start` is
  the one the engine really had);
- agents change availability and capacity as their timeline says;
- an agent offered an item it really was offered answers as it really did, after the same
  delay; any other offer is answered by a draw from that agent's recorded answers
  (`random.Random(seed)`, the only randomness);
- an owner who really held the item works as it really did (answers after the same delay,
  completes after the same time, or not); another owner takes the item's recorded times;
- cancellations (and completions of unowned items) happen when they really happened.
"""

from __future__ import annotations

import bisect
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

from allot.contexts.routing.decision import Candidate, rank, sort_key
from allot.contexts.routing.engine import BACKLOG_PASS_LIMIT, DIRECT_CANDIDATES, SCORED_CANDIDATES
from allot.contexts.routing.escalation import UNOWNED, rule_of
from allot.contexts.routing.models import EPOCH
from allot.contexts.routing.repository import quota_ok
from allot.contexts.routing.rules import aged_priority, ageing_ticks, next_due, steps_due, ttl_of
from allot.contexts.routing.simulation_batch import plan_batch
from allot.contexts.routing.simulation_model import (
    Assignment,
    History,
    ItemRecord,
    Outcome,
    QueueSpec,
)
from allot.contexts.routing.simulation_state import (
    TIMER,
    SimAgent,
    SimItem,
    SimOffer,
    SimulationBase,
)

__all__ = ["SimAgent", "SimItem", "SimOffer", "Simulation", "simulate"]


class Simulation(SimulationBase):
    """The engine's flows over the simulated state (simulation_state.py)."""

    # -- items ------------------------------------------------------------------------------
    def _on_arrive(self, group: list[ItemRecord]) -> None:
        items = [self._new_item(rec) for rec in group]
        if len(items) == 1:
            self.submit(items[0])
        else:
            plan_batch(self, items)

    def _new_item(self, rec: ItemRecord) -> SimItem:
        placement = rec.placement
        offset = rec.due_offset
        due = rec.created_at + timedelta(seconds=offset) if offset is not None else None
        item = SimItem(
            rec,
            placement.queue_id,
            placement.priority,
            placement.rules,
            placement.filter_index,
            due,
        )
        self.items[rec.id] = item
        return item

    def submit(self, item: SimItem) -> None:
        self.to_waiting(item)
        if item.queue_id is None:
            return  # no queue serves it: it waits, unrouted (engine.reroute)
        self.route(item, self.h.queues[item.queue_id], "submitted")

    def to_waiting(self, item: SimItem) -> None:
        item.state = "waiting"
        if item.queue_id is not None:
            item.backlog_key = (-item.priority, item.rec.created_at, item.rec.id)
            bisect.insort(self.backlog.setdefault(item.queue_id, []), item.backlog_key)

    def leave_backlog(self, item: SimItem) -> None:
        if item.backlog_key is not None and item.queue_id is not None:
            keys = self.backlog[item.queue_id]
            del keys[bisect.bisect_left(keys, item.backlog_key)]
            item.backlog_key = None

    def _move(self, item: SimItem, queue_id: uuid.UUID | None, priority: int) -> None:
        waiting = item.backlog_key is not None
        self.leave_backlog(item)
        item.queue_id, item.priority = queue_id, priority
        if waiting:
            self.to_waiting(item)

    def route(self, item: SimItem, queue: QueueSpec, trigger: str) -> str:
        """engine.route: assign, offer, or leave waiting (then the rule's policy)."""
        rules, rule = item.rules, rule_of(item.rules, item)  # type: ignore[arg-type]
        policy = rule.when_nobody_available if rule is not None else "wait"
        q = queue.rules
        outcome = "waiting"
        if q.offer_mode == "direct":
            for candidate in self.ranked(item, queue, DIRECT_CANDIDATES)[:DIRECT_CANDIDATES]:
                if self.assign(item, queue, self.agents[candidate.agent_id], candidate.kind_capped):
                    outcome = "assigned"
                    break
        else:
            size = 1 if q.offer_mode == "offer" else max(1, q.broadcast_size)
            made = 0
            for candidate in self.ranked(item, queue, size + DIRECT_CANDIDATES):
                if made >= size:
                    break
                agent = self.agents[candidate.agent_id]
                made += self.offer(item, queue, agent, candidate.kind_capped) is not None
            if made:
                self.leave_backlog(item)
                item.state = outcome = "offered"
        fallback = None
        if (
            outcome == "waiting"
            and rule is not None
            and policy == "fallback"
            and (rule.fallback_queue not in (None, q.name))
        ):
            fallback = self.h.queue_by_name(rule.fallback_queue or "")
        if fallback is not None:  # nobody here: at once to the rule's fallback queue
            self._move(item, fallback.rules.id, item.priority)
            return self.route(item, fallback, "fallback")
        if outcome != "assigned" and rules is not None:
            self.schedule_escalation(item)
        return outcome

    def ranked(self, item: SimItem, queue: QueueSpec, limit: int) -> list[Candidate]:
        """repository.top_candidates then decision.rank, as engine._ranked_candidates."""
        q = queue.rules
        scored = q.strategy == "score"
        limit = SCORED_CANDIDATES if scored else limit
        rows = self.candidates(
            queue, item, limit if item.rec.weight == 1 else limit * 4, with_attributes=scored
        )
        rows = [c for c in rows if c.spare >= item.rec.weight][:limit]
        return rank(q.strategy, rows, item.rec.attributes, q.scorer)

    def candidates(
        self, queue: QueueSpec, item: SimItem | None, limit: int, *, with_attributes: bool = False
    ) -> list[Candidate]:
        """The queue's eligible members not excluded for the item, in the strategy's index order
        (the score strategy reads them least loaded first), at most `limit`."""
        rows = []
        for agent_id in self.members.get(queue.rules.id, ()):
            agent = self.agents[agent_id]
            if not agent.eligible or (item is not None and item.excludes(agent_id)):
                continue
            rows.append(
                Candidate(
                    agent_id,
                    agent.load,
                    max(agent.capacity - agent.load, 0),
                    agent.last_assigned_at or EPOCH,
                    agent.idle_since or EPOCH,
                    agent.shuffle,
                    agent.attributes if with_attributes else None,
                    queue.rules.id in agent.kind_capped,
                    agent.weight,
                    self.turn_end(agent, queue.rules.id),
                )
            )
        strategy = queue.rules.strategy
        rows.sort(key=sort_key("least_loaded" if strategy == "score" else strategy))
        return rows[:limit]

    def assign(
        self, item: SimItem, queue: QueueSpec | None, agent: SimAgent, kind_capped: bool | None
    ) -> bool:
        if not self.reserve(agent, item, counts=True, kind_capped=kind_capped):
            return False
        self.leave_backlog(item)
        self.assigned(item, queue, agent)
        return True

    def assigned(self, item: SimItem, queue: QueueSpec | None, agent: SimAgent) -> None:
        """The item is the agent's now (engine._on_assigned): first-response timer, and the
        owner's work as the record says it went."""
        item.state, item.owner = "assigned", agent.id
        agent.holding[item.rec.id] = item
        due = item.due
        if due is None and queue is not None and queue.rules.first_response_seconds:
            due = self.now + timedelta(seconds=queue.rules.first_response_seconds)
        if due is not None and item.first_response_at is None:
            self._timer(f"frt:{item.rec.id}", due, "first_response_due", item, agent.id)
        item.episode += 1
        response, completion = self._work(item, agent.id)
        if response is not None and item.first_response_at is None:
            self._later(self.now + timedelta(seconds=response), "response", item, item.episode)
        if completion is not None:
            self._later(self.now + timedelta(seconds=completion), "complete", item, item.episode)
        self.out.assignments.append(Assignment(item.rec.id, agent.id, item.queue_id, self.now))
        self.out.first_assigned.setdefault(item.rec.id, self.now)

    def _work(self, item: SimItem, agent_id: uuid.UUID) -> tuple[float | None, float | None]:
        """(seconds to the first response, seconds to completion) of this hold of the item: as
        this agent's n-th real hold of it went, or the item's recorded times for a new owner."""
        n = item.held[agent_id]
        item.held[agent_id] += 1
        real = [e for e in item.rec.episodes if e.agent_id == agent_id]
        if n < len(real):
            hold = real[n]
            return hold.response, hold.duration if hold.ended == "completed" else None
        return item.rec.response, item.rec.handling

    def _on_response(self, item: SimItem, episode: int) -> None:
        if item.state == "assigned" and item.episode == episode and not item.first_response_at:
            item.first_response_at = self.now
            self.out.first_response[item.rec.id] = self.now
            self._cancel(f"frt:{item.rec.id}")

    def _on_complete(self, item: SimItem, episode: int) -> None:
        if item.state == "assigned" and item.episode == episode:
            self.close(item, "completed")

    def _on_close(self, item_id: uuid.UUID, state: str) -> None:
        item = self.items.get(item_id)
        if item is not None:
            self.close(item, state)

    # -- offers -----------------------------------------------------------------------------
    def offer(
        self, item: SimItem, queue: QueueSpec, agent: SimAgent, kind_capped: bool | None
    ) -> SimOffer | None:
        if not self.reserve(agent, item, counts=False, kind_capped=kind_capped):
            return None
        offer = SimOffer(item, agent.id, self.now, len(self.offers))
        self.offers.append(offer)
        item.pending[agent.id] = offer
        agent.pending[offer.number] = offer
        status, delay = self._answer(item, agent.id, queue)
        at = self.now + timedelta(seconds=delay)
        if status == "timed_out":  # the offer's expiry timer, made with the offer
            self._push(at, TIMER, self._seq + 1, "answer", (offer, status), self._round_at(at))
        else:
            self._later(at, "answer", offer, status)
        return offer

    def _answer(self, item: SimItem, agent_id: uuid.UUID, queue: QueueSpec) -> tuple[str, float]:
        """How the agent answers its n-th offer of this item: as it really did, else drawn."""
        n = item.offered[agent_id]
        item.offered[agent_id] += 1
        timeout = float(queue.rules.offer_timeout_seconds)
        real = [o for o in item.rec.offers if o.agent_id == agent_id]
        if n < len(real):
            offer = real[n]
            if offer.status in ("accepted", "declined", "timed_out") and offer.delay is not None:
                return offer.status, offer.delay
            if offer.status == "pending":
                return "timed_out", timeout  # unanswered when the history was read
            # Withdrawn before it answered: it had not answered within that delay (and answers
            # after it: a withdrawal at the same moment comes first).
            return self._draw(agent_id, timeout, after=(offer.delay or 0.0) + 1e-6)
        return self._draw(agent_id, timeout)

    def _draw(self, agent_id: uuid.UUID, timeout: float, after: float = 0.0) -> tuple[str, float]:
        pool = self.h.answers.get(agent_id) or self._all_answers
        status, delay = self.rng.choice(pool) if pool else ("accepted", 0.0)
        if status == "timed_out" or after + delay >= timeout:
            return "timed_out", max(timeout, after)
        return status, after + delay

    def _on_answer(self, offer: SimOffer, status: str) -> None:
        if offer.status != "pending":
            return
        if status == "accepted":
            self.accept(offer)
        else:
            self.end_offer(offer, status, reroute=True)

    def accept(self, offer: SimOffer) -> None:
        """engine.accept_offer: first accept wins; the other offers are withdrawn."""
        item, agent = offer.item, self.agents[offer.agent_id]
        offer.status = "accepted"
        del item.pending[agent.id], agent.pending[offer.number]
        item.state, item.owner = "assigned", agent.id
        self.count_assignments(agent, 1)
        for other in list(item.pending.values()):
            self.end_offer(other, "rescinded", reroute=False)
        queue = self.h.queues.get(item.queue_id) if item.queue_id else None
        self.assigned(item, queue, agent)

    def end_offer(self, offer: SimOffer, status: str, *, reroute: bool) -> None:
        """engine.end_offer: decline, time out or withdraw; the item moves on if nothing is
        left of its offers, then the agent may take other waiting work."""
        if offer.status != "pending":
            return
        item, agent = offer.item, self.agents[offer.agent_id]
        offer.status = status
        del item.pending[agent.id], agent.pending[offer.number]
        if status != "rescinded":
            item.never.add(agent.id)
        self.release(agent, item)
        if reroute and item.state == "offered" and not item.pending:
            self.to_waiting(item)
            self.reroute(item)
        self.fill_agent(agent)

    def reroute(self, item: SimItem, trigger: str = "rerouted") -> None:
        queue = self.h.queues.get(item.queue_id) if item.queue_id else None
        if queue is not None and queue.rules.is_active:
            self.route(item, queue, trigger)

    # -- capacity freed, closing, reclaiming ---------------------------------------------------
    def fill_agent(self, agent: SimAgent) -> None:
        """engine.fill_agent: the best waiting items of the agent's queues, while it has room."""
        for _ in range(BACKLOG_PASS_LIMIT):
            spare = agent.capacity - agent.load
            today, month = self.day()
            if not agent.can_take_work or spare <= 0 or not quota_ok(agent, today, month):
                return
            head = self._backlog_head(agent, spare)
            if head is None or head.queue_id is None:
                return
            queue = self.h.queues[head.queue_id]
            if queue.rules.offer_mode == "direct":
                placed = self.assign(head, queue, agent, None)
            else:
                placed = self.offer(head, queue, agent, None) is not None
                if placed:
                    self.leave_backlog(head)
                    head.state = "offered"
            if not placed:
                return

    def _backlog_head(self, agent: SimAgent, spare: int) -> SimItem | None:
        """backlog_probe.next_backlog_item: priority, then age, then id, over the agent's queues."""
        best: tuple[Any, ...] | None = None
        for queue_id in agent.queues:
            for key in self.backlog.get(queue_id, ()):
                item = self.items[key[2]]
                if item.rec.weight <= spare and not item.excludes(agent.id):
                    best = key if best is None or key < best else best
                    break
        return self.items[best[2]] if best is not None else None

    def close(self, item: SimItem, state: str) -> None:
        """closing.close_item: complete, cancel or expire; frees the owner, drains the backlog."""
        previous, owner = item.state, item.owner
        if previous not in ("waiting", "offered", "assigned"):
            return
        self.leave_backlog(item)
        item.state = state
        self.out.closed[item.rec.id] = (state, self.now)
        self._cancel(f"frt:{item.rec.id}")
        self._cancel(f"esc:{item.rec.id}")
        if previous == "offered":
            for offer in list(item.pending.values()):
                self.end_offer(offer, "rescinded", reroute=False)
        if previous == "assigned" and owner is not None:
            agent = self.agents[owner]
            del agent.holding[item.rec.id]
            self.release(agent, item)
            self.fill_agent(agent)

    def unassign(self, item: SimItem, *, exclude_owner: bool) -> None:
        """closing.unassign: take the item back from its owner and route it again."""
        owner = item.owner
        if item.state != "assigned" or owner is None:
            return
        if item.due is not None:
            item.due = self.now + (item.due - item.rec.created_at)
        item.owner = None
        self.to_waiting(item)
        self._cancel(f"frt:{item.rec.id}")
        if exclude_owner:
            item.never.add(owner)
        agent = self.agents[owner]
        del agent.holding[item.rec.id]
        self.release(agent, item)
        self.reroute(item)
        self.fill_agent(agent)

    def _fire_first_response_due(self, item: SimItem, agent_id: uuid.UUID) -> None:
        if item.state == "assigned" and item.first_response_at is None and item.owner == agent_id:
            self.unassign(item, exclude_owner=True)

    def _fire_reclaim(self, agent: SimAgent) -> None:
        if not agent.can_take_work:
            for item in self._open_items_of(agent):
                self.unassign(item, exclude_owner=False)

    # -- escalation (escalation.py, tasks.escalate) -------------------------------------------
    def schedule_escalation(
        self, item: SimItem, since: float | None = None, *, idle: bool = False
    ) -> None:
        """escalation.schedule_next. `idle`: the timer that just fired did nothing; if it is
        due again at once, it fires a microsecond later (see docs/routing-simulator.md: fired
        exactly at its due age, an ageing tick can be lost to floating point, and the engine's
        timer then comes back at once until the runner's clock has moved on)."""
        assert item.rules is not None
        age = (self.now - item.rec.created_at).total_seconds()
        since = age if since is None else since
        due = next_due(
            item.rules.definition,
            item.rule_filter,
            steps_done=item.steps_done,
            priority=item.priority,
            ageing_since=since,
        )
        if due is not None:
            at = item.rec.created_at + timedelta(seconds=due)
            if idle and at <= self.now:
                at = self.now + timedelta(microseconds=1)
            self._timer(f"esc:{item.rec.id}", at, "escalation", item, since)

    def _fire_escalation(self, item: SimItem, since: float) -> None:
        if item.state not in UNOWNED or item.rules is None:
            return
        definition = item.rules.definition
        age = (self.now - item.rec.created_at).total_seconds()
        ttl = ttl_of(definition, item.rule_filter)
        if ttl is not None and age >= ttl:
            self.close(item, "expired")
            return
        rule = rule_of(item.rules, item)  # type: ignore[arg-type]
        queue_id, priority = item.queue_id, item.priority
        due_steps = steps_due(definition, item.rule_filter, item.steps_done, age)
        for n in due_steps:
            assert rule is not None
            step = rule.steps[n]
            target = self.h.queue_by_name(step.queue) if step.queue is not None else None
            queue_id = target.rules.id if target is not None else queue_id
            current = self.h.queues.get(queue_id) if queue_id is not None else None
            if step.relax and current is not None and current.rules.base_queue_id is not None:
                queue_id = current.rules.base_queue_id  # escalation.apply_due
            priority = step.priority if step.priority is not None else priority
            priority += step.raise_priority or 0
        ticks = ageing_ticks(definition, since, age)
        if ticks and definition.ageing is not None:
            priority = aged_priority(definition, priority, ticks)
            since += ticks * definition.ageing.every_seconds
        item.steps_done += len(due_steps)
        changed = (queue_id, priority) != (item.queue_id, item.priority)
        if changed:
            self._move(item, queue_id, priority)
            if item.state == "waiting" and queue_id is not None:
                self.route(item, self.h.queues[queue_id], "escalated")
        if item.state in UNOWNED:
            self.schedule_escalation(item, since, idle=not due_steps and not ticks)

    # -- the end ----------------------------------------------------------------------------
    def _finish(self) -> None:
        start, end = self.h.start, self.h.end
        self.out.offers = Counter(o.status for o in self.offers if start <= o.created_at < end)
        for queue_id in self.h.active_queues:
            self.out.pools[queue_id] = {
                a: self.agents[a].weight
                for a in self.members[queue_id]
                if self.agents[a].is_active and not self.agents[a].on_leave
            }


def simulate(history: History, seed: int = 0) -> Outcome:
    """Run the history through the simulated engine; the same history and seed give the same
    outcome, to the last assignment."""
    return Simulation(history, seed).run()
