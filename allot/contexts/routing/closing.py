"""Closing and reclaiming work: complete / cancel / expire an item, take an item back from its
owner (reclaim after a grace, missed first response). Each frees capacity and runs the backlog
pass in the same transaction, through the engine (engine.py keeps the invariants)."""

from __future__ import annotations

import functools
import uuid
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts.routing import events
from allot.contexts.routing import repository as repo
from allot.contexts.routing.engine import (
    end_offer,
    fill_agent,
    release,
    release_and_fill,
    reroute,
)
from allot.contexts.routing.flow import Moment, RouteResult, mirror_item, publish_item
from allot.contexts.routing.models import WorkItem
from allot.kernel import timers
from allot.kernel.ids import new_id


async def close_item(session: AsyncSession, item: WorkItem, to_state: str, at: Moment) -> bool:
    """Complete, cancel or expire an item; frees its owner's capacity and drains the backlog."""
    previous_state, owner = item.state, item.owner_agent_id
    if not await repo.set_item_state(
        session,
        item.id,
        from_states=("waiting", "offered", "assigned"),
        to_state=to_state,
        closed_at=at.now,
    ):
        return False
    mirror_item(item, state=to_state, closed_at=at.now)
    await _closed(session, item, previous_state, owner, to_state, at)
    return True


async def close_assigned(session: AsyncSession, reference: str, to_state: str, at: Moment) -> bool:
    """`close_item` for an item found by reference, when it is assigned (the usual completion):
    closed, its row locked (the item first, as on every path) and read back in one UPDATE.
    False when no assigned item has that reference: the caller locks it and closes it as usual
    (waiting, offered, closed already, or none)."""
    params = {"p_reference": reference, "p_state": to_state, "p_now": at.now}
    options = {"populate_existing": True}
    result = await session.execute(_close_assigned_statement(), params, execution_options=options)
    item: WorkItem | None = result.scalars().first()
    if item is None:
        return False
    await _closed(session, item, "assigned", item.owner_agent_id, to_state, at)
    return True


@functools.cache
def _close_assigned_statement() -> Any:
    closing = (
        update(repo.ITEMS)
        .where(
            repo.ITEMS.c.reference == bindparam("p_reference"),
            repo.ITEMS.c.state == repo.sql_constant("assigned"),
        )
        .values(
            state=bindparam("p_state", type_=repo.ITEMS.c.state.type),
            closed_at=bindparam("p_now", type_=repo.ITEMS.c.closed_at.type),
        )
        .returning(*repo.ITEMS.c)
    )
    return select(WorkItem).from_statement(closing)


async def _closed(
    session: AsyncSession,
    item: WorkItem,
    previous_state: str,
    owner: uuid.UUID | None,
    to_state: str,
    at: Moment,
) -> None:
    """What follows an item's closing: its timers, offers, event and its owner's capacity."""
    await timers.cancel(session, f"frt:{item.id}")
    if item.rule_set_id is not None:
        await timers.cancel(session, f"esc:{item.id}")
    if previous_state == "offered":  # I3: only an offered item has pending offers
        for offer in await repo.pending_offers_for_item(session, item.id):
            await end_offer(session, offer.id, "rescinded", at, reroute_item=False)
    event_type = {
        "completed": events.ITEM_COMPLETED,
        "expired": events.ITEM_EXPIRED,
    }.get(to_state, events.ITEM_CANCELLED)
    await publish_item(session, event_type, item, state=to_state)
    if previous_state == "assigned" and owner is not None:
        await release_and_fill(session, owner, item, at)


async def unassign(
    session: AsyncSession, item: WorkItem, at: Moment, *, reason: str, exclude_owner: bool
) -> RouteResult:
    """Take an assigned item back from its owner and route it again (reclaim, SLA miss)."""
    owner = item.owner_agent_id
    if item.state != "assigned" or owner is None:
        return RouteResult(item.state, agent_id=owner)
    # The next owner gets the item's full first-response window again, counted from now: an
    # already-past deadline would bounce the item through every agent at once.
    due = item.first_response_due_at
    fresh_due = at.now + (due - item.created_at) if due is not None else None
    if not await repo.set_item_state(
        session,
        item.id,
        from_states=("assigned",),
        to_state="waiting",
        owner_agent_id=None,
        assigned_at=None,
        enqueued_at=item.enqueued_at,
        first_response_due_at=fresh_due,
    ):
        return RouteResult(item.state)
    mirror_item(item, state="waiting", owner_agent_id=None, assigned_at=None,
                first_response_due_at=fresh_due)  # fmt: skip
    await timers.cancel(session, f"frt:{item.id}")
    if exclude_owner:  # recorded like a decline so the item never returns to this agent
        await repo.insert_offer(
            session,
            {
                "id": new_id(),
                "item_id": item.id,
                "agent_id": owner,
                "status": "reclaimed",
                "weight": item.weight,
                "created_at": at.now,
                "expires_at": at.now,
                "responded_at": at.now,
            },
        )
    await release(session, owner, item, at)
    await publish_item(session, events.ITEM_UNASSIGNED, item, agent_id=str(owner), reason=reason)
    result = await reroute(session, item, at)
    await fill_agent(session, owner, at)
    return result


async def lock_item_by_id(session: AsyncSession, item_id: uuid.UUID) -> WorkItem | None:
    """The item with its row locked (PostgreSQL), read fresh under the lock."""
    statement = (
        select(WorkItem)
        .where(WorkItem.id == item_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    item: WorkItem | None = await session.scalar(statement)
    return item


async def items_of(session: AsyncSession, agent_id: uuid.UUID) -> list[WorkItem]:
    ids = await repo.open_items_of_agent(session, agent_id)
    if not ids:
        return []
    # In id (arrival) order: reclaimed work goes back to the backlog oldest first, the same
    # order on both databases (the what-if simulator replays it).
    result = await session.execute(
        select(WorkItem).where(WorkItem.id.in_(ids)).order_by(WorkItem.id)
    )
    return list(result.scalars())
