"""Queues: who belongs (expression, teams), how to choose among them, how to offer.

Derived queues (rules' `require`, rules.py) are ordinary queue rows with `base_queue_id` and
`require_expression`: their members are the base queue's who also satisfy the expression,
materialised like any queue's, so selection and the backlog stay index lookups. They are made
by `ensure_derived_queues` when a rule set is saved or activated, copy every other setting of
their base, and follow it when the base is edited (settings, members, switched off). They show
in queue lists and on the board as "<base> ⟨require⟩"; rules never name them.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts import audit
from allot.contexts.routing import engine, events, expressions, membership
from allot.contexts.routing import queue_catalog as catalog
from allot.contexts.routing.decision import get_scorer
from allot.contexts.routing.flow import Moment
from allot.contexts.routing.models import Queue, QueueMember, WorkItem
from allot.contexts.routing.rules import RuleSetDefinition
from allot.contexts.routing.schemas import QueueCreate, QueueOut, QueueStats, QueueUpdate
from allot.kernel.errors import Conflict, NotFound
from allot.kernel.events import publish


def _validate(strategy: str, scorer: str | None, expression: str) -> None:
    expressions.validate_expression(expression)
    if strategy == "score":
        get_scorer(scorer)


async def _after_change(session: AsyncSession, queue: Queue, before: dict[str, Any] | None) -> None:
    at = Moment.read()
    catalog.forget_queues_on_commit(session)  # this transaction routes with the new rules
    await membership.refresh_queue(session, queue, at)
    after = QueueOut.model_validate(queue).model_dump(mode="json")
    await audit.record(
        session,
        action="routing.queue.created" if before is None else "routing.queue.updated",
        object_type="routing.queue",
        object_id=queue.id,
        before=before,
        after=after,
    )
    await publish(
        session,
        type=events.QUEUE_CHANGED,
        aggregate_type="routing.queue",
        aggregate_id=queue.id,
        payload={"queue_id": str(queue.id)},
    )
    if queue.base_queue_id is None:
        await _follow_base(session, queue)
    # New members may have room for items already waiting here.
    member_ids = (
        await session.execute(
            select(QueueMember.agent_id).where(
                QueueMember.queue_id == queue.id, QueueMember.eligible.is_(True)
            )
        )
    ).scalars()
    for agent_id in list(member_ids):
        await engine.fill_agent(session, agent_id, at)


# What a derived queue copies from its base.
_FOLLOWED = (
    "work_kinds", "member_expression", "member_teams", "strategy", "scorer", "offer_mode",
    "offer_timeout_seconds", "broadcast_size", "auto_away_after_misses",
    "first_response_seconds", "reclaim_grace_seconds", "priority", "is_active",
)  # fmt: skip


def derived_name(base: str, require: str) -> str:
    name = f"{base} ⟨{require}⟩"
    if len(name) <= 200:
        return name
    digest = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
    return f"{name[:188]}… {digest}⟩"


async def _derived_of(session: AsyncSession, base_id: uuid.UUID) -> list[Queue]:
    rows = await session.execute(select(Queue).where(Queue.base_queue_id == base_id))
    return list(rows.scalars())


async def _follow_base(session: AsyncSession, base: Queue) -> None:
    """A base queue changed: its derived queues take its settings and recompute members."""
    for derived in await _derived_of(session, base.id):
        before = QueueOut.model_validate(derived).model_dump(mode="json")
        for name in _FOLLOWED:
            setattr(derived, name, getattr(base, name))
        await session.flush()
        await _after_change(session, derived, before)


async def ensure_derived_queues(session: AsyncSession, definition: RuleSetDefinition) -> int:
    """Set up the derived queue of every filter with a `require` (rules.py); returns how many
    were made. Called when a rule set is saved and when it is activated (queues may have
    changed in between); an existing one is left as it is (it follows its base already)."""
    made = 0
    for rule in definition.filters:
        require = rule.require.strip() and rule.require
        if not require:
            continue
        base = await session.scalar(
            select(Queue).where(Queue.name == rule.queue, Queue.base_queue_id.is_(None))
        )
        if base is None:
            continue  # check_definition has said so already
        existing = await session.scalar(
            select(Queue.id).where(
                Queue.base_queue_id == base.id, Queue.require_expression == require
            )
        )
        if existing is not None:
            continue
        derived = Queue(
            name=derived_name(base.name, require),
            base_queue_id=base.id,
            require_expression=require,
            **{name: getattr(base, name) for name in _FOLLOWED},
        )
        session.add(derived)
        await session.flush()
        await _after_change(session, derived, None)
        made += 1
    return made


async def create_queue(session: AsyncSession, body: QueueCreate) -> Queue:
    _validate(body.strategy, body.scorer, body.member_expression)
    if await session.scalar(select(Queue.id).where(Queue.name == body.name)):
        raise Conflict(detail=f"A queue named {body.name!r} exists")
    queue = Queue(**body.model_dump())
    session.add(queue)
    await session.flush()
    await _after_change(session, queue, None)
    return queue


async def get_queue(session: AsyncSession, queue_id: uuid.UUID) -> Queue:
    queue = await session.get(Queue, queue_id)
    if queue is None:
        raise NotFound(detail="No such queue")
    return queue


async def update_queue(session: AsyncSession, queue_id: uuid.UUID, body: QueueUpdate) -> Queue:
    queue = await get_queue(session, queue_id)
    before = QueueOut.model_validate(queue).model_dump(mode="json")
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    _validate(
        changes.get("strategy", queue.strategy),
        changes.get("scorer", queue.scorer),
        changes.get("member_expression", queue.member_expression),
    )
    for name, value in changes.items():
        setattr(queue, name, value)
    await session.flush()
    await _after_change(session, queue, before)
    return queue


async def list_queues(session: AsyncSession) -> list[Queue]:
    return list(
        (await session.execute(select(Queue).order_by(Queue.priority.desc(), Queue.name))).scalars()
    )


async def queue_stats(session: AsyncSession) -> list[QueueStats]:
    """Per queue: items by state, the longest current wait, members and available members.

    Three grouped queries whatever the number of queues (no per-queue or per-agent COUNTs).
    """
    now = Moment.read().now
    items = {
        row.queue_id: row
        for row in await session.execute(
            select(
                WorkItem.queue_id,
                func.sum(case((WorkItem.state == "waiting", 1), else_=0)).label("waiting"),
                func.sum(case((WorkItem.state == "offered", 1), else_=0)).label("offered"),
                func.sum(case((WorkItem.state == "assigned", 1), else_=0)).label("assigned"),
                func.min(
                    case((WorkItem.state == "waiting", WorkItem.enqueued_at), else_=None)
                ).label("oldest"),
            )
            .where(WorkItem.state.in_(("waiting", "offered", "assigned")))
            .group_by(WorkItem.queue_id)
        )
    }
    members = {
        row.queue_id: row
        for row in await session.execute(
            select(
                QueueMember.queue_id,
                func.count().label("members"),
                func.sum(case((QueueMember.eligible.is_(True), 1), else_=0)).label("available"),
            ).group_by(QueueMember.queue_id)
        )
    }
    stats = []
    for queue in await list_queues(session):
        item_row, member_row = items.get(queue.id), members.get(queue.id)
        oldest = item_row.oldest if item_row is not None else None
        if oldest is not None and oldest.tzinfo is None:
            from datetime import UTC

            oldest = oldest.replace(tzinfo=UTC)
        stats.append(
            QueueStats(
                queue_id=queue.id,
                name=queue.name,
                waiting=int(item_row.waiting or 0) if item_row else 0,
                offered=int(item_row.offered or 0) if item_row else 0,
                assigned=int(item_row.assigned or 0) if item_row else 0,
                longest_wait_seconds=(now - oldest).total_seconds() if oldest else None,
                members=int(member_row.members) if member_row else 0,
                available_members=int(member_row.available or 0) if member_row else 0,
            )
        )
    return stats
