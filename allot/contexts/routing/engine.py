"""The routing engine: places work items with agents, inside the caller's transaction.

Every function here runs in one unit of work with the change that triggered it (a submission, a
completion, a decline, a status change), so "capacity freed" and "next item placed" commit
together: the backlog is drained in the same flow, never by a polling sweep.

Where the invariants of models.py are kept:
- I1 capacity: `repository.reserve_capacity` / `release_capacity` (conditional UPDATEs).
- I2 one owner: `repository.claim_item` (conditional UPDATE on state); an item submitted and
  assigned at once is INSERTed owned (`flow.insert_submitted`) after its agent's reservation:
  no other transaction can see it before this one commits, so there is nothing to claim.
- I3 offers: the partial unique index on pending offers, `set_offer_status` (pending -> x once)
  and the exclusion in `top_candidates` / `backlog_probe.next_backlog_item`.
- I4 membership mirror: `mirror.sync_memberships` after every agent state change.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts.routing import (
    backlog_probe,
    decision_log,
    escalation,
    events,
    mirror,
    rule_catalog,
)
from allot.contexts.routing import queue_catalog as catalog
from allot.contexts.routing import repository as repo
from allot.contexts.routing.decision import rank, vt_step
from allot.contexts.routing.flow import (
    Moment,
    RouteResult,
    insert_submitted,
    item_payload,
    mirror_item,
    publish_item,
)
from allot.contexts.routing.models import WorkItem
from allot.contexts.routing.queue_catalog import QueueRules
from allot.kernel import timers
from allot.kernel.errors import Conflict
from allot.kernel.events import publish
from allot.kernel.ids import new_id

DIRECT_CANDIDATES = 5  # tried in order if a reservation loses a race
SCORED_CANDIDATES = 50
BACKLOG_PASS_LIMIT = 100  # an agent freed of capacity takes at most this many items in one flow

OFFER_EXPIRY = "routing.offer_expiry"
FIRST_RESPONSE_DUE = "routing.first_response_due"
RECLAIM = "routing.reclaim"
BACKLOG_SWEEP_OF_AGENT = "routing.backlog_pass"  # one agent's backlog pass, after a commit


# -- placing an item -------------------------------------------------------------------------
async def route(
    session: AsyncSession,
    item: WorkItem,
    queue: QueueRules,
    at: Moment,
    *,
    trigger: str = "submitted",
    at_submit: bool = False,
    unsaved: bool = False,
) -> RouteResult:
    """Place a waiting item: assign it, offer it, or leave it waiting (and say so). Every call
    logs one decision (decision_log.py): the candidates as ranked, who was left out and why.

    Nobody can take it: the item's rule says what then (rules.py `when_nobody_available`):
    wait; fall back to another queue at once (a second decision, trigger `fallback`); or wait and
    publish an escalation for the manager. Left unowned under rules, its escalation timer is set
    (escalation.py).

    `at_submit`: this route answers the item's submit (trigger "submitted", or a fallback of
    one): an assignment made here is in the submitter's result, and its event says so.
    `unsaved`: the submitted item's row is not written yet (direct mode only): it is INSERTed
    assigned to the agent who takes it, or waiting when nobody does. (Its agent is then locked
    before its reference's index entry; two concurrent submits of one reference may deadlock,
    which PostgreSQL breaks and the unit of work retries: the retry finds the duplicate.)"""
    if unsaved and queue.offer_mode != "direct":
        raise ValueError("only a direct-mode route writes the item it places")  # offers need it
    rules = await rule_catalog.rules_by_id(session, item.rule_set_id)
    rule = escalation.rule_of(rules, item)
    policy = rule.when_nobody_available if rule is not None else "wait"
    result: RouteResult | None = None
    chosen: list[uuid.UUID] = []
    if queue.offer_mode == "direct":
        ranked = await _ranked_candidates(session, item, queue, DIRECT_CANDIDATES)
        agent_id = await _assign_to_first(
            session, item, queue, at, ranked, at_submit=at_submit or trigger == "submitted",
            unsaved=unsaved,
        )  # fmt: skip
        if agent_id is not None:
            result, chosen = RouteResult("assigned", agent_id=agent_id), [agent_id]
        elif unsaved:
            await insert_submitted(session, item)
    else:
        size = 1 if queue.offer_mode == "offer" else max(1, queue.broadcast_size)
        ranked = await _ranked_candidates(session, item, queue, size + DIRECT_CANDIDATES)
        offer_ids, chosen = await _offer_to_best(session, item, queue, at, size, ranked)
        if offer_ids:
            result = RouteResult("offered", offer_ids=offer_ids)
    if result is None:
        await publish_item(session, events.ITEM_WAITING, item, reason="no_eligible_agent")
        result = RouteResult("waiting")
    await decision_log.log_route(
        session, item, queue, at, trigger, result, ranked, chosen, policy, rules
    )
    if result.state == "waiting" and rule is not None:
        if policy == "fallback" and rule.fallback_queue not in (None, queue.name):
            fallback = await catalog.queue_by_name(session, rule.fallback_queue or "")
            if fallback is not None and await escalation.move(session, item, queue_id=fallback.id):
                return await route(
                    session, item, fallback, at, trigger="fallback",
                    at_submit=at_submit or trigger == "submitted",
                )  # fmt: skip
        elif policy == "escalate":
            await escalation.publish_escalated(
                session, item, reason="nobody_available", notify=["manager"]
            )
    if result.state != "assigned" and rules is not None:
        await escalation.schedule_next(session, item, rules, at.now)
    return result


async def _ranked_candidates(
    session: AsyncSession, item: WorkItem, queue: QueueRules, limit: int
) -> list[Any]:
    scored = queue.strategy == "score"
    candidates = await repo.top_candidates(
        session,
        queue_id=queue.id,
        strategy=queue.strategy,
        weight=item.weight,
        item_id=item.id,
        limit=SCORED_CANDIDATES if scored else limit,
        with_attributes=scored,
    )
    return rank(queue.strategy, candidates, item.attributes, queue.scorer)


async def _assign_to_first(
    session: AsyncSession,
    item: WorkItem,
    queue: QueueRules,
    at: Moment,
    ranked: list[Any],
    *,
    at_submit: bool,
    unsaved: bool = False,
) -> uuid.UUID | None:
    for candidate in ranked[:DIRECT_CANDIDATES]:
        agent_id: uuid.UUID = candidate.agent_id
        assigned = await _assign_to(
            session, item, queue, agent_id, at, candidate.kind_capped, at_submit=at_submit,
            unsaved=unsaved,
        )  # fmt: skip
        if assigned is not None:
            return agent_id
    return None


async def _reserve(
    session: AsyncSession,
    item: WorkItem,
    queue: QueueRules,
    agent_id: uuid.UUID,
    at: Moment,
    kind_capped: bool | None,
    *,
    counts_as_assignment: bool,
    released: Any | None = None,
) -> Any | None:
    """Reserve the item's weight on the agent (I1) and mirror the agent into its queues (I4),
    the agent taking a turn in `queue` (weighted round robin: decision.vt_step). Returns the
    agent's state after the reservation, or None when it did not happen.

    `released`: the agent's state after a release whose mirror is not written yet; it is
    written here either way, as part of the reservation's mirror or, without a reservation, on
    its own."""
    state = await repo.reserve_capacity(
        session,
        agent_id=agent_id,
        weight=item.weight,
        kind=item.kind,
        now=at.now,
        today=at.today,
        month=at.month,
        counts_as_assignment=counts_as_assignment,
        kind_capped=kind_capped,
    )
    if state is None:
        if released is not None:
            await mirror.sync_memberships(session, released, at.today, at.month)
        return None
    turn = (queue.id, vt_step(state.weight))
    turned = released is not None and repo.takes_work(released, at.today, at.month)
    await mirror.sync_memberships(
        session, state, at.today, at.month, reshuffle=True, advance=turn, turned_eligible=turned
    )
    return state


async def _assign_to(
    session: AsyncSession,
    item: WorkItem,
    queue: QueueRules,
    agent_id: uuid.UUID,
    at: Moment,
    kind_capped: bool | None = None,
    released: Any | None = None,
    *,
    at_submit: bool = False,
    unsaved: bool = False,
) -> Any | None:
    """Assign the item to the agent: the agent's state after it, or None (not assigned).
    `unsaved`: the item's row is INSERTed here, assigned (`route`)."""
    state = await _reserve(
        session, item, queue, agent_id, at, kind_capped, counts_as_assignment=True,
        released=released,
    )  # fmt: skip
    if state is None:
        return None  # lost a race for this agent's last slot; the caller tries the next one
    if unsaved:
        try:
            await insert_submitted(
                session, item, state="assigned", owner_agent_id=agent_id, assigned_at=at.now,
                times_routed=item.times_routed + 1,
            )  # fmt: skip
        except Conflict:
            await release(session, agent_id, item, at)  # should the caller go on regardless
            raise
    elif await repo.claim_item(
        session, item_id=item.id, agent_id=agent_id, from_states=("waiting",), now=at.now
    ):
        mirror_item(item, state="assigned", owner_agent_id=agent_id, assigned_at=at.now)
    else:
        await release(session, agent_id, item, at)
        return None
    await _on_assigned(session, item, queue, agent_id, at, via="direct", at_submit=at_submit)
    return state


async def _on_assigned(
    session: AsyncSession,
    item: WorkItem,
    queue: QueueRules | None,
    agent_id: uuid.UUID,
    at: Moment,
    *,
    via: str,
    at_submit: bool = False,
) -> None:
    due = item.first_response_due_at
    if due is None and queue is not None and queue.first_response_seconds:
        due = at.now + timedelta(seconds=queue.first_response_seconds)
    if due is not None and item.first_response_at is None:
        await timers.schedule(
            session,
            FIRST_RESPONSE_DUE,
            max(due, at.now),
            {"item_id": str(item.id), "agent_id": str(agent_id)},
            key=f"frt:{item.id}",
        )
    await publish_item(
        session,
        events.ITEM_ASSIGNED,
        item,
        agent_id=str(agent_id),
        via=via,
        at_submit=at_submit,
        first_response_due_at=due.isoformat() if due else None,
    )


async def _offer_to_best(
    session: AsyncSession,
    item: WorkItem,
    queue: QueueRules,
    at: Moment,
    size: int,
    ranked: list[Any],
) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Offers to the best `size` candidates who can still be reserved: (offer ids, agents)."""
    offer_ids: list[uuid.UUID] = []
    agents: list[uuid.UUID] = []
    for candidate in ranked:
        if len(offer_ids) >= size:
            break
        offered = await _offer_to(
            session, item, queue, candidate.agent_id, at, candidate.kind_capped
        )
        if offered is not None:
            offer_ids.append(offered[0])
            agents.append(candidate.agent_id)
    if offer_ids:
        moved = await repo.set_item_state(
            session, item.id, from_states=("waiting", "offered"), to_state="offered"
        )
        if not moved:
            raise RuntimeError(f"Item {item.id} left 'waiting' while offers were being made")
        mirror_item(item, state="offered")
        expires = at.now + timedelta(seconds=queue.offer_timeout_seconds)
        await publish_item(
            session,
            events.ITEM_OFFERED,
            item,
            offer_ids=[str(o) for o in offer_ids],
            expires_at=expires.isoformat(),
        )
    return offer_ids, agents


async def _offer_to(
    session: AsyncSession,
    item: WorkItem,
    queue: QueueRules,
    agent_id: uuid.UUID,
    at: Moment,
    kind_capped: bool | None = None,
    released: Any | None = None,
) -> tuple[uuid.UUID, Any] | None:
    """Offer the item to the agent: (the offer's id, the agent's state after it), or None."""
    state = await _reserve(
        session, item, queue, agent_id, at, kind_capped, counts_as_assignment=False,
        released=released,
    )  # fmt: skip
    if state is None:
        return None
    offer_id = new_id()
    expires = at.now + timedelta(seconds=queue.offer_timeout_seconds)
    await repo.insert_offer(
        session,
        {
            "id": offer_id,
            "item_id": item.id,
            "agent_id": agent_id,
            "status": "pending",
            "weight": item.weight,
            "created_at": at.now,
            "expires_at": expires,
        },
    )
    await timers.schedule(
        session, OFFER_EXPIRY, expires, {"offer_id": str(offer_id)}, key=f"offer:{offer_id}"
    )
    return offer_id, state


# -- capacity freed: the backlog pass ---------------------------------------------------------
async def release(session: AsyncSession, agent_id: uuid.UUID, item: Any, at: Moment) -> None:
    """I1: give the item's weight back to the agent, and mirror the agent (I4)."""
    state = await repo.release_capacity(
        session, agent_id=agent_id, weight=item.weight, kind=item.kind, now=at.now
    )
    await mirror.sync_memberships(session, state, at.today, at.month)


async def release_and_fill(
    session: AsyncSession, agent_id: uuid.UUID, item: Any, at: Moment
) -> int:
    """`release` then `fill_agent`, as one flow: the release's membership mirror is written
    with the first reservation's (one UPDATE of the agent's rows instead of two)."""
    released = await repo.release_capacity(
        session, agent_id=agent_id, weight=item.weight, kind=item.kind, now=at.now
    )
    return await fill_agent(session, agent_id, at, released=released)


async def fill_agent(
    session: AsyncSession, agent_id: uuid.UUID, at: Moment, *, released: Any | None = None
) -> int:
    """Give an agent with spare capacity the best waiting items of its queues, now.

    `released`: the agent's state as a release just left it, its membership mirror not written
    yet (`release_and_fill`); it is written by the first reservation's mirror, or on its own.
    The agent's state is read once: then each reservation's UPDATE returns it (its row stays
    locked by that UPDATE, so nothing else changes it meanwhile)."""
    placed = 0
    state = released if released is not None else await repo.load_agent_state(session, agent_id)
    unmirrored = released
    for _ in range(BACKLOG_PASS_LIMIT):
        if not repo.takes_work(state, at.today, at.month):
            break
        head = await backlog_probe.next_backlog_item(session, agent_id, state.capacity - state.load)
        if head is None:
            break
        item = head.item
        queue = await catalog.queue_rules(session, item.queue_id) if item.queue_id else None
        if queue is None:
            break
        if queue.offer_mode == "direct":
            reserved = await _assign_to(
                session, item, queue, agent_id, at, head.kind_capped, released=unmirrored
            )
        else:
            reserved = await _offer_single(
                session, item, queue, agent_id, at, head.kind_capped, released=unmirrored
            )
        unmirrored = None  # _reserve wrote it
        if reserved is None:
            break
        state = reserved
        rules = await rule_catalog.rules_by_id(session, item.rule_set_id)
        decision_log.record(
            session,
            item_id=item.id,
            moment=at,
            trigger="capacity_freed",
            outcome="assigned" if queue.offer_mode == "direct" else "offered",
            queue_id=queue.id,
            strategy=queue.strategy,
            agent_ids=[agent_id],
            rule_set_id=item.rule_set_id,
            rule_filter=rules.filter_name(item.rule_filter) if rules else None,
            note="backlog_head",  # the agent had room; this was the best item waiting for it
        )
        placed += 1
    if unmirrored is not None:
        await mirror.sync_memberships(session, unmirrored, at.today, at.month)
    return placed


async def _offer_single(
    session: AsyncSession,
    item: WorkItem,
    queue: QueueRules,
    agent_id: uuid.UUID,
    at: Moment,
    kind_capped: bool | None = None,
    released: Any | None = None,
) -> Any | None:
    """Offer the item to this one agent: the agent's state after it, or None (not offered)."""
    offered = await _offer_to(session, item, queue, agent_id, at, kind_capped, released)
    if offered is None:
        return None
    offer_id, state = offered
    await repo.set_item_state(session, item.id, from_states=("waiting",), to_state="offered")
    mirror_item(item, state="offered")
    await publish_item(
        session,
        events.ITEM_OFFERED,
        item,
        offer_ids=[str(offer_id)],
        expires_at=(at.now + timedelta(seconds=queue.offer_timeout_seconds)).isoformat(),
    )
    return state


async def reroute(
    session: AsyncSession, item: WorkItem, at: Moment, *, trigger: str = "rerouted"
) -> RouteResult:
    """Route an item that just went back to waiting (declined, timed out, reclaimed)."""
    queue = await catalog.queue_rules(session, item.queue_id) if item.queue_id else None
    if queue is None or not queue.is_active:
        await publish_item(session, events.ITEM_WAITING, item, reason="no_queue")
        decision_log.record(
            session, item_id=item.id, moment=at, trigger=trigger, outcome="waiting",
            queue_id=item.queue_id, rule_set_id=item.rule_set_id, policy="wait", note="no_queue",
        )  # fmt: skip
        return RouteResult("waiting")
    return await route(session, item, queue, at, trigger=trigger)


# -- offers ----------------------------------------------------------------------------------
async def accept_offer(
    session: AsyncSession, offer_id: uuid.UUID, agent_id: uuid.UUID, at: Moment
) -> WorkItem | None:
    """First accept wins: the offer and the item move in one transaction; others are rescinded.

    Lock order everywhere an item's offers change: the item row first, then offer rows, then
    agent rows — so concurrent accepts and declines of one item queue up instead of deadlocking.
    """
    item_id = await repo.offer_item_id(session, offer_id)
    if item_id is None:
        return None
    await repo.lock_item(session, item_id)
    offer = await repo.set_offer_status(
        session, offer_id, to_status="accepted", now=at.now, agent_id=agent_id
    )
    if offer is None:
        return None
    if not await repo.claim_item(
        session, item_id=offer.item_id, agent_id=agent_id, from_states=("offered",), now=at.now
    ):
        raise RuntimeError(f"Offer {offer_id} was pending but its item was not offered")
    await timers.cancel(session, f"offer:{offer_id}")
    state = await repo.count_assignment(session, agent_id, at.today, at.month)
    await mirror.sync_memberships(session, state, at.today, at.month)
    item = await session.get(WorkItem, offer.item_id, populate_existing=True)
    assert item is not None
    await publish(
        session,
        type=events.OFFER_ACCEPTED,
        aggregate_type="routing.item",
        aggregate_id=item.id,
        payload=item_payload(item, offer_id=str(offer_id), agent_id=str(agent_id)),
    )
    for other in await repo.pending_offers_for_item(session, item.id):
        await end_offer(session, other.id, "rescinded", at, reroute_item=False)
    queue = await catalog.queue_rules(session, item.queue_id) if item.queue_id else None
    await _on_assigned(session, item, queue, agent_id, at, via="offer")
    decision_log.record(
        session,
        item_id=item.id,
        moment=at,
        trigger="accepted",
        outcome="assigned",
        queue_id=item.queue_id,
        strategy=queue.strategy if queue else None,
        agent_ids=[agent_id],
        rule_set_id=item.rule_set_id,
        note="offer_accepted",
    )
    return item


async def end_offer(
    session: AsyncSession,
    offer_id: uuid.UUID,
    status: str,
    at: Moment,
    *,
    agent_id: uuid.UUID | None = None,
    reroute_item: bool = True,
) -> Any | None:
    """Decline, time out or rescind a pending offer; with `reroute_item`, the item is routed on
    if nothing is left (not when the caller decides what becomes of it: an accept, a close)."""
    item_id = await repo.offer_item_id(session, offer_id)
    if item_id is None:
        return None
    await repo.lock_item(session, item_id)
    offer = await repo.set_offer_status(
        session, offer_id, to_status=status, now=at.now, agent_id=agent_id
    )
    if offer is None:
        return None
    await timers.cancel(session, f"offer:{offer_id}")
    item = await session.get(WorkItem, offer.item_id, populate_existing=True)
    assert item is not None
    await release(session, offer.agent_id, item, at)
    event_type = {
        "declined": events.OFFER_DECLINED,
        "timed_out": events.OFFER_TIMED_OUT,
        "rescinded": events.OFFER_RESCINDED,
    }[status]
    await publish(
        session,
        type=event_type,
        aggregate_type="routing.item",
        aggregate_id=item.id,
        payload=item_payload(item, offer_id=str(offer_id), agent_id=str(offer.agent_id)),
    )
    if (
        reroute_item
        and item.state == "offered"
        and not await repo.pending_offers_for_item(session, item.id)
    ):
        await repo.set_item_state(session, item.id, from_states=("offered",), to_state="waiting")
        mirror_item(item, state="waiting")
        await reroute(session, item, at)
    # The agent's capacity is free again: it may take other waiting work (not this item).
    await fill_agent(session, offer.agent_id, at)
    return offer


# -- an agent stops taking work ----------------------------------------------------------
async def rescind_offers_of(session: AsyncSession, agent_id: uuid.UUID, at: Moment) -> int:
    """An agent stopped taking work: its pending offers go to others."""
    offers = await repo.pending_offers_for_agent(session, agent_id)
    for offer in offers:
        await end_offer(session, offer.id, "rescinded", at)
    return len(offers)
