"""Work items and offers: submit, accept, decline, complete, cancel, first response.

Any context routes work through these functions (via the package's public interface); they run
in the caller's transaction and never commit.
"""

from __future__ import annotations

import functools
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts.routing import closing, engine, rule_catalog
from allot.contexts.routing import queue_catalog as catalog
from allot.contexts.routing.flow import Moment, insert_submitted
from allot.contexts.routing.models import Agent, Offer, WorkItem
from allot.contexts.routing.schemas import SubmitResult
from allot.kernel.errors import Conflict, NotFound, ValidationFailed
from allot.kernel.ids import new_id


async def submit(
    session: AsyncSession,
    *,
    reference: str,
    kind: str,
    attributes: dict[str, Any] | None = None,
    priority: int = 0,
    weight: int = 1,
    queue_id: uuid.UUID | None = None,
    first_response_due_at: datetime | None = None,
) -> SubmitResult:
    """Take a work item in and place it now: assigned, offered, or waiting in its queue.

    `reference` is the submitter's id for the item ("lead:<uuid>"); it is unique, so submitting
    the same thing twice is a Conflict rather than two items.
    """
    if weight < 1:
        raise ValidationFailed.on("weight", "Must be at least 1")
    at = Moment.read()
    if queue_id is not None:
        queue = await catalog.queue_rules(session, queue_id)
        if queue is None:
            raise ValidationFailed.on("queue_id", "No such queue", "unknown_queue")
        placement = rule_catalog.Placement(queue, priority)
    else:
        placement = await rule_catalog.place(
            session, kind=kind, attributes=attributes or {}, priority=priority, weight=weight
        )
    queue = placement.queue
    item = WorkItem(
        id=new_id(), reference=reference, kind=kind, attributes=attributes or {},
        weight=weight, state="waiting", owner_agent_id=None, created_at=at.now,
        enqueued_at=at.now, assigned_at=None, first_response_at=None,
        first_response_due_at=first_response_due_at, closed_at=None, times_routed=0,
        **placement.row_values(priority),
    )  # fmt: skip
    if queue is not None and queue.offer_mode == "direct":
        # Written by the route: already assigned when an agent takes it at once (engine.route,
        # `unsaved`), which saves claiming it with a second statement.
        result = await engine.route(session, item, queue, at, unsaved=True)
    else:
        await insert_submitted(session, item)
        if queue is None:
            result = await engine.reroute(session, item, at, trigger="submitted")
        else:
            result = await engine.route(session, item, queue, at)
    return SubmitResult(
        item_id=item.id, state=result.state, agent_id=result.agent_id, offer_ids=result.offer_ids
    )


async def get_item(session: AsyncSession, item_id: uuid.UUID) -> WorkItem:
    item = await session.get(WorkItem, item_id)
    if item is None:
        raise NotFound(detail="No such work item")
    return item


async def item_by_reference(session: AsyncSession, reference: str) -> WorkItem | None:
    return await session.scalar(select(WorkItem).where(WorkItem.reference == reference))


async def _locked_item(session: AsyncSession, reference: str) -> WorkItem:
    """The item, its row locked (PostgreSQL; the item first, as on every path) and read fresh
    under the lock: one statement."""
    item: WorkItem | None = await session.scalar(
        _locked_item_statement(), {"p_reference": reference}
    )
    if item is None:
        raise NotFound(detail=f"No work item {reference!r}")
    return item


@functools.cache
def _locked_item_statement() -> Any:
    # Built once: building and hashing the statement cost more than PostgreSQL takes to run it.
    return (
        select(WorkItem)
        .where(WorkItem.reference == bindparam("p_reference"))
        .with_for_update()
        .execution_options(populate_existing=True)
    )


async def complete(session: AsyncSession, reference: str) -> bool:
    """The work is done: the owner's capacity frees and the backlog moves, in this transaction."""
    return await _close(session, reference, "completed")


async def cancel(session: AsyncSession, reference: str) -> bool:
    return await _close(session, reference, "cancelled")


async def _close(session: AsyncSession, reference: str, to_state: str) -> bool:
    at = Moment.read()
    if await closing.close_assigned(session, reference, to_state, at):
        return True
    item = await _locked_item(session, reference)
    return await closing.close_item(session, item, to_state, at)


async def record_first_response(session: AsyncSession, reference: str) -> bool:
    """The owner answered: the first-response SLA is met and its reclaim timer is cancelled."""
    item = await _locked_item(session, reference)
    if item.first_response_at is not None or item.state != "assigned":
        return False
    at = Moment.read()
    item.first_response_at = at.now
    from allot.kernel import timers

    await timers.cancel(session, f"frt:{item.id}")
    return True


async def accept_offer(session: AsyncSession, offer_id: uuid.UUID, agent_id: uuid.UUID) -> WorkItem:
    item = await engine.accept_offer(session, offer_id, agent_id, Moment.read())
    if item is None:
        raise Conflict(
            detail="This offer is no longer open (accepted elsewhere, expired or withdrawn)"
        )
    await _reset_missed_offers(session, agent_id)
    return item


async def decline_offer(session: AsyncSession, offer_id: uuid.UUID, agent_id: uuid.UUID) -> None:
    ended = await engine.end_offer(session, offer_id, "declined", Moment.read(), agent_id=agent_id)
    if ended is None:
        raise Conflict(detail="This offer is no longer open")


async def _reset_missed_offers(session: AsyncSession, agent_id: uuid.UUID) -> None:
    agent = await session.get(Agent, agent_id)
    if agent is not None and agent.missed_offers:
        agent.missed_offers = 0


async def get_offer(session: AsyncSession, offer_id: uuid.UUID) -> Offer:
    offer = await session.get(Offer, offer_id)
    if offer is None:
        raise NotFound(detail="No such offer")
    return offer


async def pending_offers_of(session: AsyncSession, agent_id: uuid.UUID) -> list[Any]:
    """The agent's open offers with what each is for, soonest to expire first (one query)."""
    stmt = (
        select(
            Offer.id,
            Offer.created_at,
            Offer.expires_at,
            WorkItem.reference,
            WorkItem.kind,
            WorkItem.priority,
        )
        .join(WorkItem, WorkItem.id == Offer.item_id)
        .where(Offer.agent_id == agent_id, Offer.status == "pending")
        .order_by(Offer.expires_at, Offer.id)
    )
    return list((await session.execute(stmt)).all())


async def open_items_of(session: AsyncSession, agent_id: uuid.UUID) -> list[WorkItem]:
    """The items the agent owns and has not finished, newest first (one query)."""
    stmt = (
        select(WorkItem)
        .where(WorkItem.owner_agent_id == agent_id, WorkItem.state == "assigned")
        .order_by(WorkItem.assigned_at.desc(), WorkItem.id.desc())
    )
    return list((await session.execute(stmt)).scalars())
