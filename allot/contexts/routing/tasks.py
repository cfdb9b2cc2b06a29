"""Durable timers of the routing context. Each handler runs in the transaction that marks its
timer fired, and re-checks the state it was scheduled for (it may have changed since)."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts.routing import (
    agent_service,
    closing,
    decision_log,
    engine,
    escalation,
    rule_catalog,
)
from allot.contexts.routing.engine import BACKLOG_SWEEP_OF_AGENT, FIRST_RESPONSE_DUE, OFFER_EXPIRY
from allot.contexts.routing.flow import Moment
from allot.contexts.routing.models import Agent, Offer, Queue, WorkItem
from allot.kernel.timers import Timer, timer_handler


@timer_handler(OFFER_EXPIRY)
async def expire_offer(session: AsyncSession, timer: Timer) -> None:
    """Nobody answered in time: the offer times out, the item moves on, misses are counted."""
    offer_id = uuid.UUID(timer.payload["offer_id"])
    at = Moment.read()
    offer = await engine.end_offer(session, offer_id, "timed_out", at)
    if offer is None:
        return  # answered or rescinded before the timer fired
    agent = await session.get(Agent, offer.agent_id)
    offer_row = await session.get(Offer, offer_id)
    item = await session.get(WorkItem, offer_row.item_id) if offer_row else None
    queue = await session.get(Queue, item.queue_id) if item and item.queue_id else None
    if agent is None:
        return
    agent.missed_offers += 1
    threshold = queue.auto_away_after_misses if queue else None
    if threshold and agent.missed_offers >= threshold and agent.status == "available":
        await agent_service.set_status(session, agent.id, "away", reason="missed_offers")


@timer_handler(FIRST_RESPONSE_DUE)
async def first_response_due(session: AsyncSession, timer: Timer) -> None:
    """No first response before the SLA: the item goes to someone else."""
    item = await session.get(WorkItem, uuid.UUID(timer.payload["item_id"]))
    if item is None or item.state != "assigned" or item.first_response_at is not None:
        return
    if str(item.owner_agent_id) != timer.payload.get("agent_id"):
        return  # reassigned since; its new owner has its own timer
    await closing.unassign(
        session, item, Moment.read(), reason="first_response_sla", exclude_owner=True
    )


@timer_handler(agent_service.RECLAIM_AFTER_OFFLINE)
async def reclaim(session: AsyncSession, timer: Timer) -> None:
    """The grace after going offline / on leave / deactivated ran out: hand its work on."""
    agent = await session.get(Agent, uuid.UUID(timer.payload["agent_id"]))
    if agent is None or agent.can_take_work:
        return
    at = Moment.read()
    for item in await closing.items_of(session, agent.id):
        await closing.unassign(session, item, at, reason="agent_unavailable", exclude_owner=False)


@timer_handler(agent_service.PRESENCE_CHECK)
async def presence_check(session: AsyncSession, timer: Timer) -> None:
    await agent_service.check_presence(session, uuid.UUID(timer.payload["agent_id"]), timer.payload)


@timer_handler(agent_service.SHIFT_CHANGE)
async def shift_change(session: AsyncSession, timer: Timer) -> None:
    await agent_service.apply_shift(session, uuid.UUID(timer.payload["agent_id"]))


@timer_handler(agent_service.LEAVE_CHANGE)
async def leave_change(session: AsyncSession, timer: Timer) -> None:
    agent = await session.get(Agent, uuid.UUID(timer.payload["agent_id"]))
    if agent is not None:
        await agent_service.refresh_leave(session, agent, Moment.read())


@timer_handler(BACKLOG_SWEEP_OF_AGENT)
async def backlog_pass(session: AsyncSession, timer: Timer) -> None:
    """Place waiting work with an agent that a concurrent batch skipped while it was busy
    (placement.py): the same pass as when its capacity frees."""
    await engine.fill_agent(session, uuid.UUID(timer.payload["agent_id"]), Moment.read())


@timer_handler(escalation.ESCALATION)
async def escalate(session: AsyncSession, timer: Timer) -> None:
    """An unowned item reached a time step, an ageing tick or its TTL (rules.py)."""
    item = await closing.lock_item_by_id(session, uuid.UUID(timer.payload["item_id"]))
    if item is None or item.state not in escalation.UNOWNED:
        return  # placed or closed since: escalation is only for unowned work
    rules = await rule_catalog.rules_by_id(session, item.rule_set_id)
    if rules is None:
        return
    at = Moment.read()
    since = float(timer.payload.get("ageing_since", 0))
    done = await escalation.apply_due(session, item, rules, at.now, since)
    if done.expire:
        await closing.close_item(session, item, "expired", at)
        decision_log.record(
            session, item_id=item.id, moment=at, trigger="escalated", outcome="expired",
            queue_id=item.queue_id, rule_set_id=item.rule_set_id,
            rule_filter=rules.filter_name(item.rule_filter), note="ttl",
        )  # fmt: skip
        return
    if done.reroute_in is not None:
        await engine.route(session, item, done.reroute_in, at, trigger="escalated")
    if item.state in escalation.UNOWNED:
        await escalation.schedule_next(session, item, rules, at.now, done.ageing_since)
