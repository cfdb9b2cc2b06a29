"""Set-based submission for bulk work (imports): many work items in a constant number of
statements, placed by the engine's own backlog pass.

`submit_many` puts every item in as `waiting`, in the queue `submit` would choose for its kind
(`repository.queue_for_kind`), with one executemany INSERT. Then each agent that can take work
in those queues gets the backlog through `engine.fill_agent`, the code that hands waiting work
to an agent whose capacity frees up — so capacity (I1), single ownership (I2), offers (I3) and
the membership mirror (I4) are kept by the same statements as everywhere else, and the events
of an assignment or an offer are the engine's own. Agents are served least loaded first.

An item that is still waiting afterwards gets the `routing.item.waiting` event `submit`
publishes for it (reason `no_eligible_agent`, or `no_queue` when no active queue serves its kind);
a placed item gets the engine's `routing.item.assigned` / `routing.item.offered` instead, as with
`submit`. The backlog pass serves the oldest, most urgent waiting work first, so items that were
waiting before the batch are placed before the batch's own (as they would be if capacity freed).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel.events.outbox import NewEvent, publish_many
from allot.kernel.ids import new_id

from . import engine, events
from . import queue_catalog as catalog
from .engine import Moment
from .repository import AGENTS, ITEMS, MEMBERS, OFFERS
from .schemas import SubmitResult


@dataclass(frozen=True, slots=True)
class NewItem:
    """One work item for `submit_many`; the same fields `submit` takes as keywords."""

    reference: str
    kind: str
    attributes: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    weight: int = 1
    first_response_due_at: datetime | None = None


async def submit_many(session: AsyncSession, items: Sequence[NewItem]) -> list[SubmitResult]:
    """Take the items in and place what the agents can take now; one result per item, in order.

    A reference submitted before fails the INSERT (unique), which aborts the caller's
    transaction: bulk callers make fresh references (`lead:<new id>`)."""
    if not items:
        return []
    at = Moment.read()
    queues: dict[str, Any] = {}
    for kind in {item.kind for item in items}:
        queues[kind] = await catalog.queue_for_kind(session, kind)
    rows: list[dict[str, Any]] = []
    for item in items:
        if item.weight < 1:
            raise ValueError(f"weight of {item.reference!r} must be at least 1")
        queue = queues[item.kind]
        rows.append(
            {
                "id": new_id(),
                "reference": item.reference,
                "kind": item.kind,
                "attributes": item.attributes,
                "priority": item.priority,
                "weight": item.weight,
                "queue_id": queue.id if queue else None,
                "state": "waiting",
                "owner_agent_id": None,
                "created_at": at.now,
                "enqueued_at": at.now,
                "assigned_at": None,
                "first_response_at": None,
                "first_response_due_at": item.first_response_due_at,
                "closed_at": None,
                "times_routed": 0,
            }
        )
    await session.execute(insert(ITEMS), rows)
    queue_ids = {q.id for q in queues.values() if q is not None}
    for agent_id in await _agents_with_room(session, queue_ids):
        while await engine.fill_agent(session, agent_id, at) >= engine.BACKLOG_PASS_LIMIT:
            pass  # a pass places at most BACKLOG_PASS_LIMIT items; go on while it fills up
    placed = await _placed(session, [row["id"] for row in rows])
    results: list[SubmitResult] = []
    waiting: list[NewEvent] = []
    for row in rows:
        state, owner, offer_ids = placed.get(row["id"], ("waiting", None, []))
        results.append(
            SubmitResult.model_construct(
                item_id=row["id"], state=state, agent_id=owner, offer_ids=offer_ids
            )
        )
        if state == "waiting":
            reason = "no_eligible_agent" if row["queue_id"] else "no_queue"
            waiting.append(
                NewEvent(
                    type=events.ITEM_WAITING,
                    aggregate_type="routing.item",
                    aggregate_id=row["id"],
                    payload={
                        "item_id": str(row["id"]),
                        "reference": row["reference"],
                        "kind": row["kind"],
                        "queue_id": str(row["queue_id"]) if row["queue_id"] else None,
                        "reason": reason,
                    },
                )
            )
    await publish_many(session, waiting)
    return results


async def _agents_with_room(session: AsyncSession, queue_ids: set[uuid.UUID]) -> list[uuid.UUID]:
    """Agents eligible in any of the queues (available, on shift, under quota, spare > 0: the
    membership mirror I4), least loaded first; `fill_agent` re-checks each under its own rules."""
    if not queue_ids:
        return []
    statement = (
        select(MEMBERS.c.agent_id, AGENTS.c.load, AGENTS.c.last_assigned_at)
        .join(AGENTS, AGENTS.c.id == MEMBERS.c.agent_id)
        .where(MEMBERS.c.queue_id.in_(queue_ids), MEMBERS.c.eligible.is_(True))
        .distinct()
        .order_by(AGENTS.c.load, AGENTS.c.last_assigned_at, MEMBERS.c.agent_id)
    )
    return [row.agent_id for row in await session.execute(statement)]


async def _placed(
    session: AsyncSession, item_ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[str, uuid.UUID | None, list[uuid.UUID]]]:
    """State, owner and pending offers of the items that are no longer waiting."""
    rows = (
        await session.execute(
            select(ITEMS.c.id, ITEMS.c.state, ITEMS.c.owner_agent_id).where(
                ITEMS.c.id.in_(item_ids), ITEMS.c.state != "waiting"
            )
        )
    ).all()
    placed: dict[uuid.UUID, tuple[str, uuid.UUID | None, list[uuid.UUID]]] = {
        row.id: (row.state, row.owner_agent_id, []) for row in rows
    }
    offered = [row.id for row in rows if row.state == "offered"]
    if offered:
        statement = (
            select(OFFERS.c.item_id, OFFERS.c.id)
            .where(OFFERS.c.item_id.in_(offered), OFFERS.c.status == "pending")
            .order_by(OFFERS.c.id)
        )
        for offer in await session.execute(statement):
            placed[offer.item_id][2].append(offer.id)
    return placed
