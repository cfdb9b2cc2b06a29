"""All SQL of the routing context. Hot-path statements are SQLAlchemy Core (no ORM unit of work)
and every state change is a conditional UPDATE whose row count says whether it happened."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, case, delete, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts.routing.decision import Candidate
from allot.contexts.routing.models import (
    BUSY,
    EPOCH,
    Agent,
    AgentKindLoad,
    Offer,
    Queue,
    QueueMember,
    WorkItem,
)

# An agent who had one of these with an item is never offered that item again (I3).
EXCLUDING_OFFER_STATUSES = ("pending", "declined", "timed_out", "reclaimed")

_ORDER = {
    "least_loaded": (QueueMember.load, QueueMember.last_assigned_at, QueueMember.shuffle),
    "most_available": (QueueMember.spare.desc(), QueueMember.last_assigned_at, QueueMember.shuffle),
    "round_robin": (QueueMember.last_assigned_at, QueueMember.shuffle),
    "longest_idle": (QueueMember.idle_since, QueueMember.shuffle),
    "score": (QueueMember.load, QueueMember.last_assigned_at, QueueMember.shuffle),
}


async def top_candidates(
    session: AsyncSession,
    *,
    queue_id: uuid.UUID,
    strategy: str,
    weight: int,
    item_id: uuid.UUID,
    limit: int,
    with_attributes: bool = False,
) -> list[Candidate]:
    """The best few eligible members of a queue, in strategy order: one ordered index range."""
    columns: list[Any] = [
        QueueMember.agent_id,
        QueueMember.load,
        QueueMember.spare,
        QueueMember.last_assigned_at,
        QueueMember.idle_since,
        QueueMember.shuffle,
    ]
    stmt = select(*columns)
    if with_attributes:
        stmt = stmt.add_columns(Agent.attributes).join(Agent, Agent.id == QueueMember.agent_id)
    stmt = (
        stmt.where(
            QueueMember.queue_id == queue_id,
            QueueMember.eligible.is_(True),
            QueueMember.spare >= weight,
            ~exists().where(
                Offer.item_id == item_id,
                Offer.agent_id == QueueMember.agent_id,
                Offer.status.in_(EXCLUDING_OFFER_STATUSES),
            ),
        )
        .order_by(*_ORDER[strategy])
        .limit(limit)
    )
    rows = (await session.execute(stmt)).all()
    return [
        Candidate(
            agent_id=row[0],
            load=row[1],
            spare=row[2],
            last_assigned_at=row[3],
            idle_since=row[4],
            shuffle=row[5],
            attributes=row[6] if with_attributes else None,
        )
        for row in rows
    ]


def _eligible_condition() -> Any:
    return and_(
        Agent.status == "available",
        Agent.is_active.is_(True),
        Agent.on_leave.is_(False),
        Agent.off_shift.is_(False),
    )


def _quota_condition(today: date, month: str) -> Any:
    return and_(
        or_(
            Agent.daily_quota.is_(None),
            Agent.quota_day.is_(None),
            Agent.quota_day != today,
            Agent.assigned_in_day < Agent.daily_quota,
        ),
        or_(
            Agent.monthly_quota.is_(None),
            Agent.quota_month.is_(None),
            Agent.quota_month != month,
            Agent.assigned_in_month < Agent.monthly_quota,
        ),
    )


def _quota_increment(today: date, month: str) -> dict[str, Any]:
    return {
        "assigned_in_day": case((Agent.quota_day == today, Agent.assigned_in_day + 1), else_=1),
        "quota_day": today,
        "assigned_in_month": case(
            (Agent.quota_month == month, Agent.assigned_in_month + 1), else_=1
        ),
        "quota_month": month,
    }


AGENT_STATE_COLUMNS = (
    Agent.id,
    Agent.capacity,
    Agent.load,
    Agent.status,
    Agent.is_active,
    Agent.on_leave,
    Agent.off_shift,
    Agent.last_assigned_at,
    Agent.idle_since,
    Agent.daily_quota,
    Agent.quota_day,
    Agent.assigned_in_day,
    Agent.monthly_quota,
    Agent.quota_month,
    Agent.assigned_in_month,
)


async def reserve_capacity(
    session: AsyncSession,
    *,
    agent_id: uuid.UUID,
    weight: int,
    kind: str,
    now: datetime,
    today: date,
    month: str,
    counts_as_assignment: bool,
) -> Any | None:
    """I1: add `weight` to the agent's load only if it fits and the agent can take work.

    Returns the agent's new state row, or None when the reservation did not happen (full,
    unavailable, over quota, or per-kind cap reached). Never read-then-write: the WHERE clause is
    the check, and the row lock taken by UPDATE makes concurrent reservations queue up.
    """
    kind_result: Any = await session.execute(
        update(AgentKindLoad)
        .where(
            AgentKindLoad.agent_id == agent_id,
            AgentKindLoad.kind == kind,
            AgentKindLoad.load + weight <= AgentKindLoad.capacity,
        )
        .values(load=AgentKindLoad.load + weight)
    )
    kind_reserved = kind_result.rowcount == 1
    if not kind_reserved:
        capped = await session.scalar(
            select(func.count())
            .select_from(AgentKindLoad)
            .where(AgentKindLoad.agent_id == agent_id, AgentKindLoad.kind == kind)
        )
        if capped:
            return None
    values: dict[str, Any] = {
        "load": Agent.load + weight,
        "last_assigned_at": now,
        "idle_since": BUSY,
    }
    if counts_as_assignment:
        values.update(_quota_increment(today, month))
    stmt = (
        update(Agent)
        .where(
            Agent.id == agent_id,
            Agent.load + weight <= Agent.capacity,
            _eligible_condition(),
            _quota_condition(today, month),
        )
        .values(**values)
        .returning(*AGENT_STATE_COLUMNS)
    )
    row = (await session.execute(stmt)).first()
    if row is None and kind_reserved:
        await _release_kind(session, agent_id, kind, weight)
    return row


async def count_assignment(
    session: AsyncSession, agent_id: uuid.UUID, today: date, month: str
) -> Any:
    """Quota bookkeeping when an offer (capacity already reserved) becomes an assignment."""
    stmt = (
        update(Agent)
        .where(Agent.id == agent_id)
        .values(**_quota_increment(today, month))
        .returning(*AGENT_STATE_COLUMNS)
    )
    return (await session.execute(stmt)).first()


async def release_capacity(
    session: AsyncSession, *, agent_id: uuid.UUID, weight: int, kind: str, now: datetime
) -> Any:
    await _release_kind(session, agent_id, kind, weight)
    stmt = (
        update(Agent)
        .where(Agent.id == agent_id, Agent.load >= weight)
        .values(
            load=Agent.load - weight,
            idle_since=case((Agent.load - weight == 0, now), else_=Agent.idle_since),
        )
        .returning(*AGENT_STATE_COLUMNS)
    )
    row = (await session.execute(stmt)).first()
    if row is None:
        raise RuntimeError(f"Capacity accounting broken for agent {agent_id}: load < {weight}")
    return row


async def _release_kind(session: AsyncSession, agent_id: uuid.UUID, kind: str, weight: int) -> None:
    await session.execute(
        update(AgentKindLoad)
        .where(AgentKindLoad.agent_id == agent_id, AgentKindLoad.kind == kind)
        .values(load=AgentKindLoad.load - weight)
    )


def quota_ok(row: Any, today: date, month: str) -> bool:
    day_full = (
        row.daily_quota is not None
        and row.quota_day == today
        and row.assigned_in_day >= row.daily_quota
    )
    month_full = (
        row.monthly_quota is not None
        and row.quota_month == month
        and row.assigned_in_month >= row.monthly_quota
    )
    return not (day_full or month_full)


async def sync_memberships(
    session: AsyncSession, row: Any, today: date, month: str, *, reshuffle: bool = False
) -> None:
    """I4: mirror the agent's state into its membership rows (same transaction)."""
    can_take = (
        row.status == "available" and row.is_active and not row.on_leave and not row.off_shift
    )
    spare = max(row.capacity - row.load, 0)
    values: dict[str, Any] = {
        "load": row.load,
        "spare": spare,
        "eligible": bool(can_take and spare > 0 and quota_ok(row, today, month)),
        "last_assigned_at": row.last_assigned_at or EPOCH,
        "idle_since": row.idle_since or EPOCH,
    }
    if reshuffle:
        values["shuffle"] = random.random()
    await session.execute(
        update(QueueMember).where(QueueMember.agent_id == row.id).values(**values)
    )


async def load_agent_state(session: AsyncSession, agent_id: uuid.UUID) -> Any:
    return (await session.execute(select(*AGENT_STATE_COLUMNS).where(Agent.id == agent_id))).one()


async def claim_item(
    session: AsyncSession,
    *,
    item_id: uuid.UUID,
    agent_id: uuid.UUID,
    from_states: Sequence[str],
    now: datetime,
) -> bool:
    """I2: the item gets an owner only if it is still unowned in one of `from_states`."""
    result: Any = await session.execute(
        update(WorkItem)
        .where(WorkItem.id == item_id, WorkItem.state.in_(from_states))
        .values(
            state="assigned",
            owner_agent_id=agent_id,
            assigned_at=now,
            times_routed=WorkItem.times_routed + 1,
        )
    )
    return bool(result.rowcount == 1)


async def set_item_state(
    session: AsyncSession,
    item_id: uuid.UUID,
    *,
    from_states: Sequence[str],
    to_state: str,
    **values: Any,
) -> bool:
    result: Any = await session.execute(
        update(WorkItem)
        .where(WorkItem.id == item_id, WorkItem.state.in_(from_states))
        .values(state=to_state, **values)
    )
    return bool(result.rowcount == 1)


async def insert_offer(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(insert(Offer).values(**values))


async def set_offer_status(
    session: AsyncSession,
    offer_id: uuid.UUID,
    *,
    to_status: str,
    now: datetime,
    agent_id: uuid.UUID | None = None,
) -> Any | None:
    """pending -> to_status, once. Returns the offer row, or None if it was no longer pending."""
    conditions = [Offer.id == offer_id, Offer.status == "pending"]
    if agent_id is not None:
        conditions.append(Offer.agent_id == agent_id)
    stmt = (
        update(Offer)
        .where(*conditions)
        .values(status=to_status, responded_at=now)
        .returning(Offer.id, Offer.item_id, Offer.agent_id, Offer.weight)
    )
    return (await session.execute(stmt)).first()


async def offer_item_id(session: AsyncSession, offer_id: uuid.UUID) -> uuid.UUID | None:
    return await session.scalar(select(Offer.item_id).where(Offer.id == offer_id))


async def lock_item(session: AsyncSession, item_id: uuid.UUID) -> None:
    """Row lock on PostgreSQL (SQLite's single writer already serialises)."""
    await session.execute(select(WorkItem.id).where(WorkItem.id == item_id).with_for_update())


async def lock_items_offered_to(session: AsyncSession, agent_id: uuid.UUID) -> None:
    """Before an agent's own row changes: lock the items it holds offers for (in id order), so
    this path takes locks item-first like accept/decline do and cannot deadlock with them."""
    await session.execute(
        select(WorkItem.id)
        .where(
            WorkItem.id.in_(
                select(Offer.item_id).where(Offer.agent_id == agent_id, Offer.status == "pending")
            )
        )
        .order_by(WorkItem.id)
        .with_for_update()
    )


async def pending_offers_for_item(session: AsyncSession, item_id: uuid.UUID) -> list[Any]:
    stmt = select(Offer.id, Offer.agent_id, Offer.weight).where(
        Offer.item_id == item_id, Offer.status == "pending"
    )
    return list((await session.execute(stmt)).all())


async def pending_offers_for_agent(session: AsyncSession, agent_id: uuid.UUID) -> list[Any]:
    stmt = select(Offer.id, Offer.item_id, Offer.weight).where(
        Offer.agent_id == agent_id, Offer.status == "pending"
    )
    return list((await session.execute(stmt)).all())


async def next_backlog_item(session: AsyncSession, agent_id: uuid.UUID, spare: int) -> Any | None:
    """The best waiting item (priority, then age) in any queue the agent belongs to."""
    stmt = (
        select(WorkItem.id, WorkItem.queue_id)
        .join(QueueMember, QueueMember.queue_id == WorkItem.queue_id)
        .where(
            QueueMember.agent_id == agent_id,
            WorkItem.state == "waiting",
            WorkItem.weight <= spare,
            ~exists().where(
                Offer.item_id == WorkItem.id,
                Offer.agent_id == agent_id,
                Offer.status.in_(EXCLUDING_OFFER_STATUSES),
            ),
        )
        .order_by(WorkItem.priority.desc(), WorkItem.enqueued_at, WorkItem.id)
        .limit(1)
        # Item before agent, like every other path; an item another transaction is placing is
        # skipped rather than waited for (PostgreSQL; SQLite's single writer needs neither).
        .with_for_update(skip_locked=True, of=WorkItem)
    )
    return (await session.execute(stmt)).first()


async def open_items_of_agent(session: AsyncSession, agent_id: uuid.UUID) -> list[Any]:
    stmt = select(WorkItem.id).where(
        WorkItem.owner_agent_id == agent_id, WorkItem.state == "assigned"
    )
    return list((await session.execute(stmt)).scalars())


async def get_queue(session: AsyncSession, queue_id: uuid.UUID) -> Queue | None:
    return await session.get(Queue, queue_id)


async def queue_for_kind(session: AsyncSession, kind: str) -> Queue | None:
    """The highest-priority active queue serving `kind` (rules choose queues in the next issue)."""
    queues = (
        await session.execute(
            select(Queue)
            .where(Queue.is_active.is_(True))
            .order_by(Queue.priority.desc(), Queue.created_at)
        )
    ).scalars()
    for queue in queues:
        if kind in (queue.work_kinds or []):
            return queue
    return None


async def delete_memberships_of_queue(session: AsyncSession, queue_id: uuid.UUID) -> None:
    await session.execute(delete(QueueMember).where(QueueMember.queue_id == queue_id))
