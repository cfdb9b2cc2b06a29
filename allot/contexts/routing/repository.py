"""All SQL of the routing context. Hot-path statements are SQLAlchemy Core (no ORM unit of work)
and every state change is a conditional UPDATE whose row count says whether it happened."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Integer,
    Table,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts.routing.decision import Candidate, tie_draw, vt_step, weighted_load
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

# Hot-path statements use the Core tables (no ORM bookkeeping per statement).
AGENTS: Table = Agent.__table__  # type: ignore[assignment]
MEMBERS: Table = QueueMember.__table__  # type: ignore[assignment]
ITEMS: Table = WorkItem.__table__  # type: ignore[assignment]
OFFERS: Table = Offer.__table__  # type: ignore[assignment]
KIND_LOADS: Table = AgentKindLoad.__table__  # type: ignore[assignment]

# An agent who had one of these with an item is never offered that item again (I3).
EXCLUDING_OFFER_STATUSES = ("pending", "declined", "timed_out", "reclaimed")

# decision.sort_key, as index orders (models.QueueMember's indexes).
_ORDER = {
    "least_loaded": (MEMBERS.c.weighted_load, MEMBERS.c.last_assigned_at, MEMBERS.c.shuffle),
    "most_available": (MEMBERS.c.spare.desc(), MEMBERS.c.last_assigned_at, MEMBERS.c.shuffle),
    "round_robin": (MEMBERS.c.turn_end, MEMBERS.c.last_assigned_at, MEMBERS.c.shuffle),
    "longest_idle": (MEMBERS.c.idle_since, MEMBERS.c.last_assigned_at, MEMBERS.c.shuffle),
    "score": (MEMBERS.c.weighted_load, MEMBERS.c.last_assigned_at, MEMBERS.c.shuffle),
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
    stmt = _candidates_statement(strategy, with_attributes)
    params = {
        "p_queue_id": queue_id,
        "p_item_id": item_id,
        "p_limit": limit if weight == 1 else limit * 4,
    }
    rows = (await session.execute(stmt, params)).all()
    return [
        Candidate(
            agent_id=row[0],
            load=row[1],
            spare=row[2],
            last_assigned_at=row[3],
            idle_since=row[4],
            shuffle=row[5],
            kind_capped=row[6],
            weight=row[7],
            virtual_time=row[8],
            attributes=row[9] if with_attributes else None,
        )
        for row in rows
        if row[2] >= weight
    ][:limit]


def literal_limit(value: int | None = None) -> Any:
    return bindparam("p_limit", value, type_=Integer(), literal_execute=True)


# The intake path's statements are built once (functools.cache) and run with bound parameters:
# building and hashing a statement costs more than SQLite takes to run it.
@functools.cache
def _candidates_statement(strategy: str, with_attributes: bool) -> Any:
    columns: list[Any] = [
        MEMBERS.c.agent_id,
        MEMBERS.c.load,
        MEMBERS.c.spare,
        MEMBERS.c.last_assigned_at,
        MEMBERS.c.idle_since,
        MEMBERS.c.shuffle,
        MEMBERS.c.kind_capped,
        MEMBERS.c.weight,
        MEMBERS.c.turn_end,
    ]
    stmt = select(*columns)
    if with_attributes:
        stmt = stmt.add_columns(AGENTS.c.attributes).join(AGENTS, AGENTS.c.id == MEMBERS.c.agent_id)
    return (
        stmt.where(
            MEMBERS.c.queue_id == bindparam("p_queue_id"),
            # `eligible` implies spare > 0; heavier items filter spare below, so the WHERE stays
            # an equality prefix of the strategy's index and LIMIT stops after a few entries.
            MEMBERS.c.eligible.is_(True),
            ~exists().where(
                OFFERS.c.item_id == bindparam("p_item_id"),
                OFFERS.c.agent_id == MEMBERS.c.agent_id,
                OFFERS.c.status.in_(EXCLUDING_OFFER_STATUSES),
            ),
        )
        .order_by(*_ORDER[strategy])
        # Rendered into the SQL, not sent as a parameter: PostgreSQL's generic plan for a
        # prepared statement with an unknown LIMIT sorts the whole range instead of walking the
        # index and stopping.
        .limit(literal_limit())
    )


def eligible_condition() -> Any:
    return and_(
        AGENTS.c.status == "available",
        AGENTS.c.is_active.is_(True),
        AGENTS.c.on_leave.is_(False),
        AGENTS.c.off_shift.is_(False),
    )


def _quota_condition(today: Any, month: Any) -> Any:
    return and_(
        or_(
            AGENTS.c.daily_quota.is_(None),
            AGENTS.c.quota_day.is_(None),
            AGENTS.c.quota_day != today,
            AGENTS.c.assigned_in_day < AGENTS.c.daily_quota,
        ),
        or_(
            AGENTS.c.monthly_quota.is_(None),
            AGENTS.c.quota_month.is_(None),
            AGENTS.c.quota_month != month,
            AGENTS.c.assigned_in_month < AGENTS.c.monthly_quota,
        ),
    )


def _quota_increment(today: Any, month: Any) -> dict[str, Any]:
    return {
        "assigned_in_day": case(
            (AGENTS.c.quota_day == today, AGENTS.c.assigned_in_day + 1), else_=1
        ),
        "quota_day": today,
        "assigned_in_month": case(
            (AGENTS.c.quota_month == month, AGENTS.c.assigned_in_month + 1), else_=1
        ),
        "quota_month": month,
    }


AGENT_STATE_COLUMNS = (
    AGENTS.c.id,
    AGENTS.c.capacity,
    AGENTS.c.load,
    AGENTS.c.status,
    AGENTS.c.is_active,
    AGENTS.c.on_leave,
    AGENTS.c.off_shift,
    AGENTS.c.last_assigned_at,
    AGENTS.c.idle_since,
    AGENTS.c.daily_quota,
    AGENTS.c.quota_day,
    AGENTS.c.assigned_in_day,
    AGENTS.c.monthly_quota,
    AGENTS.c.quota_month,
    AGENTS.c.assigned_in_month,
    AGENTS.c.weight,
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
    kind_capped: bool | None = None,
) -> Any | None:
    """I1: add `weight` to the agent's load only if it fits and the agent can take work.

    Returns the agent's new state row, or None when the reservation did not happen (full,
    unavailable, over quota, or per-kind cap reached). Never read-then-write: the WHERE clause is
    the check, and the row lock taken by UPDATE makes concurrent reservations queue up.
    """
    kind_reserved = False
    if kind_capped is not False:  # None: unknown here, so check
        kind_result: Any = await session.execute(
            _reserve_kind_statement(),
            {"p_agent_id": agent_id, "p_kind": kind, "p_weight": weight},
        )
        kind_reserved = kind_result.rowcount == 1
    if kind_capped is not False and not kind_reserved:
        capped = await session.scalar(
            select(func.count())
            .select_from(KIND_LOADS)
            .where(KIND_LOADS.c.agent_id == agent_id, KIND_LOADS.c.kind == kind)
        )
        if capped:
            return None
    stmt = _reserve_statement(counts_as_assignment)
    params = {"p_agent_id": agent_id, "p_weight": weight, "p_now": now, "p_today": today,
              "p_month": month, "p_busy": BUSY}  # fmt: skip
    row = (await session.execute(stmt, params)).first()
    if row is None and kind_reserved:
        await _release_kind(session, agent_id, kind, weight)
    return row


@functools.cache
def _reserve_statement(counts_as_assignment: bool) -> Any:
    today: Any = bindparam("p_today", type_=AGENTS.c.quota_day.type)
    month: Any = bindparam("p_month")
    weight: Any = bindparam("p_weight")
    values: dict[str, Any] = {
        "load": AGENTS.c.load + weight,
        "last_assigned_at": bindparam("p_now", type_=AGENTS.c.last_assigned_at.type),
        "idle_since": bindparam("p_busy", type_=AGENTS.c.idle_since.type),
    }
    if counts_as_assignment:
        values.update(_quota_increment(today, month))
    return (
        update(AGENTS)
        .where(
            AGENTS.c.id == bindparam("p_agent_id"),
            AGENTS.c.load + weight <= AGENTS.c.capacity,
            eligible_condition(),
            _quota_condition(today, month),
        )
        .values(**values)
        .returning(*AGENT_STATE_COLUMNS)
    )


@functools.cache
def _reserve_kind_statement() -> Any:
    weight: Any = bindparam("p_weight")
    return (
        update(KIND_LOADS)
        .where(
            KIND_LOADS.c.agent_id == bindparam("p_agent_id"),
            KIND_LOADS.c.kind == bindparam("p_kind"),
            KIND_LOADS.c.load + weight <= KIND_LOADS.c.capacity,
        )
        .values(load=KIND_LOADS.c.load + weight)
    )


async def count_assignment(
    session: AsyncSession, agent_id: uuid.UUID, today: date, month: str
) -> Any:
    """Quota bookkeeping when an offer (capacity already reserved) becomes an assignment."""
    stmt = (
        update(AGENTS)
        .where(AGENTS.c.id == agent_id)
        .values(**_quota_increment(today, month))
        .returning(*AGENT_STATE_COLUMNS)
    )
    return (await session.execute(stmt)).first()


async def release_capacity(
    session: AsyncSession, *, agent_id: uuid.UUID, weight: int, kind: str, now: datetime
) -> Any:
    await _release_kind(session, agent_id, kind, weight)
    stmt = (
        update(AGENTS)
        .where(AGENTS.c.id == agent_id, AGENTS.c.load >= weight)
        .values(
            load=AGENTS.c.load - weight,
            idle_since=case((AGENTS.c.load - weight == 0, now), else_=AGENTS.c.idle_since),
        )
        .returning(*AGENT_STATE_COLUMNS)
    )
    row = (await session.execute(stmt)).first()
    if row is None:
        raise RuntimeError(f"Capacity accounting broken for agent {agent_id}: load < {weight}")
    return row


async def _release_kind(session: AsyncSession, agent_id: uuid.UUID, kind: str, weight: int) -> None:
    await session.execute(
        update(KIND_LOADS)
        .where(KIND_LOADS.c.agent_id == agent_id, KIND_LOADS.c.kind == kind)
        .values(load=KIND_LOADS.c.load - weight)
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
    session: AsyncSession,
    row: Any,
    today: date,
    month: str,
    *,
    reshuffle: bool = False,
    advance: tuple[uuid.UUID, int] | None = None,
) -> None:
    """I4: mirror the agent's state into its membership rows (same transaction). `advance`
    (queue, amount) moves the agent's virtual time in that queue: a reservation there."""
    params = _mirror(row, today, month, reshuffle, advance)
    await session.execute(_sync_members_statement(tuple(_mirrored(reshuffle))), params)


async def sync_memberships_many(
    session: AsyncSession,
    rows: Sequence[Any],
    today: date,
    month: str,
    *,
    reshuffle: bool = False,
    advance: dict[uuid.UUID, tuple[uuid.UUID, int]] | None = None,
) -> None:
    """`sync_memberships` for several agents, in one executemany (`advance` by agent id)."""
    if rows:
        moves = advance or {}
        params = [_mirror(row, today, month, reshuffle, moves.get(row.id)) for row in rows]
        await session.execute(_sync_members_statement(tuple(_mirrored(reshuffle))), params)


def _mirrored(reshuffle: bool) -> list[str]:
    columns = ["load", "spare", "eligible", "last_assigned_at", "idle_since", "weight",
               "weighted_load"]  # fmt: skip
    return [*columns, "shuffle"] if reshuffle else columns


def _mirror(
    row: Any, today: date, month: str, reshuffle: bool, advance: tuple[uuid.UUID, int] | None
) -> dict[str, Any]:
    can_take = (
        row.status == "available" and row.is_active and not row.on_leave and not row.off_shift
    )
    spare = max(row.capacity - row.load, 0)
    weight = float(row.weight)
    values: dict[str, Any] = {
        "load": row.load,
        "spare": spare,
        "eligible": bool(can_take and spare > 0 and quota_ok(row, today, month)),
        "last_assigned_at": row.last_assigned_at or EPOCH,
        "idle_since": row.idle_since or EPOCH,
        "weight": weight,
        "weighted_load": weighted_load(row.load, weight),
    }
    if reshuffle:
        values["shuffle"] = tie_draw(row.id, values["last_assigned_at"], row.load)
    queue_id, amount = advance if advance is not None else (None, 0)
    return {
        "p_agent_id": row.id,
        "p_queue_id": queue_id,
        "p_advance": amount,
        "p_turn": vt_step(weight),
        **{f"v_{name}": value for name, value in values.items()},
    }


@functools.cache
def _sync_members_statement(columns: tuple[str, ...]) -> Any:
    """The mirror UPDATE of one agent's membership rows, with their weighted round robin
    position: a row that turns eligible starts no earlier than where the queue's next member to
    be served (the lowest `turn_end` among the others eligible: one probe of
    `ix_routing_members_round_robin`) started its turn, so time spent away, full or outside the
    queue is not a credit of turns to take at once; the reserving queue's row then moves on by
    `p_advance`, and `turn_end` is where the row's next turn ends (`p_turn`: its step)."""
    others = MEMBERS.alias("others")
    lowest = (
        select(others.c.virtual_time)
        .where(
            others.c.queue_id == MEMBERS.c.queue_id,
            others.c.eligible.is_(True),
            others.c.agent_id != MEMBERS.c.agent_id,
        )
        .order_by(others.c.turn_end, others.c.virtual_time)  # ties: one answer everywhere
        .limit(1)
        .scalar_subquery()
    )
    eligible: Any = bindparam("v_eligible", type_=MEMBERS.c.eligible.type)
    returning = and_(MEMBERS.c.eligible.is_(False), eligible.is_(True))
    start = case(
        (and_(returning, lowest > MEMBERS.c.virtual_time), lowest), else_=MEMBERS.c.virtual_time
    )
    moved = case(
        (MEMBERS.c.queue_id == bindparam("p_queue_id", type_=MEMBERS.c.queue_id.type),
         bindparam("p_advance", type_=MEMBERS.c.virtual_time.type)),
        else_=0,
    )  # fmt: skip
    values: dict[str, Any] = {
        name: bindparam(f"v_{name}", type_=MEMBERS.c[name].type) for name in columns
    }
    values["eligible"] = eligible
    values["virtual_time"] = start + moved
    values["turn_end"] = start + moved + bindparam("p_turn", type_=MEMBERS.c.turn_end.type)
    return update(MEMBERS).where(MEMBERS.c.agent_id == bindparam("p_agent_id")).values(values)


async def load_agent_state(session: AsyncSession, agent_id: uuid.UUID) -> Any:
    return (
        await session.execute(select(*AGENT_STATE_COLUMNS).where(AGENTS.c.id == agent_id))
    ).one()


async def claim_item(
    session: AsyncSession,
    *,
    item_id: uuid.UUID,
    agent_id: uuid.UUID,
    from_states: Sequence[str],
    now: datetime,
) -> bool:
    """I2: the item gets an owner only if it is still unowned in one of `from_states`."""
    params = {"p_item_id": item_id, "p_agent_id": agent_id, "p_now": now}
    result: Any = await session.execute(_claim_statement(tuple(from_states)), params)
    return bool(result.rowcount == 1)


@functools.cache
def _claim_statement(from_states: tuple[str, ...]) -> Any:
    return (
        update(ITEMS)
        .where(ITEMS.c.id == bindparam("p_item_id"), ITEMS.c.state.in_(from_states))
        .values(
            state="assigned",
            owner_agent_id=bindparam("p_agent_id"),
            assigned_at=bindparam("p_now", type_=ITEMS.c.assigned_at.type),
            times_routed=ITEMS.c.times_routed + 1,
        )
    )


async def set_item_state(
    session: AsyncSession,
    item_id: uuid.UUID,
    *,
    from_states: Sequence[str],
    to_state: str,
    **values: Any,
) -> bool:
    result: Any = await session.execute(
        update(ITEMS)
        .where(ITEMS.c.id == item_id, ITEMS.c.state.in_(from_states))
        .values(state=to_state, **values)
    )
    return bool(result.rowcount == 1)


async def insert_offer(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(insert(OFFERS).values(**values))


async def set_offer_status(
    session: AsyncSession,
    offer_id: uuid.UUID,
    *,
    to_status: str,
    now: datetime,
    agent_id: uuid.UUID | None = None,
) -> Any | None:
    """pending -> to_status, once. Returns the offer row, or None if it was no longer pending."""
    conditions = [OFFERS.c.id == offer_id, OFFERS.c.status == "pending"]
    if agent_id is not None:
        conditions.append(OFFERS.c.agent_id == agent_id)
    stmt = (
        update(OFFERS)
        .where(*conditions)
        .values(status=to_status, responded_at=now)
        .returning(OFFERS.c.id, OFFERS.c.item_id, OFFERS.c.agent_id, OFFERS.c.weight)
    )
    return (await session.execute(stmt)).first()


async def offer_item_id(session: AsyncSession, offer_id: uuid.UUID) -> uuid.UUID | None:
    return await session.scalar(select(OFFERS.c.item_id).where(OFFERS.c.id == offer_id))


async def lock_item(session: AsyncSession, item_id: uuid.UUID) -> None:
    """Row lock on PostgreSQL (SQLite's single writer already serialises)."""
    await session.execute(select(ITEMS.c.id).where(ITEMS.c.id == item_id).with_for_update())


async def lock_items_offered_to(session: AsyncSession, agent_id: uuid.UUID) -> None:
    """Before an agent's own row changes: lock the items it holds offers for (in id order), so
    this path takes locks item-first like accept/decline do and cannot deadlock with them."""
    await session.execute(
        select(ITEMS.c.id)
        .where(
            ITEMS.c.id.in_(
                select(OFFERS.c.item_id).where(
                    OFFERS.c.agent_id == agent_id, OFFERS.c.status == "pending"
                )
            )
        )
        .order_by(ITEMS.c.id)
        .with_for_update()
    )


async def pending_offers_for_item(session: AsyncSession, item_id: uuid.UUID) -> list[Any]:
    stmt = (
        select(OFFERS.c.id, OFFERS.c.agent_id, OFFERS.c.weight)
        .where(OFFERS.c.item_id == item_id, OFFERS.c.status == "pending")
        .order_by(OFFERS.c.id)
    )
    return list((await session.execute(stmt)).all())


async def pending_offers_for_agent(session: AsyncSession, agent_id: uuid.UUID) -> list[Any]:
    stmt = (
        select(OFFERS.c.id, OFFERS.c.item_id, OFFERS.c.weight)
        .where(OFFERS.c.agent_id == agent_id, OFFERS.c.status == "pending")
        .order_by(OFFERS.c.id)
    )
    return list((await session.execute(stmt)).all())


async def open_items_of_agent(session: AsyncSession, agent_id: uuid.UUID) -> list[Any]:
    stmt = select(ITEMS.c.id).where(ITEMS.c.owner_agent_id == agent_id, ITEMS.c.state == "assigned")
    return list((await session.execute(stmt)).scalars())


async def get_queue(session: AsyncSession, queue_id: uuid.UUID) -> Queue | None:
    return await session.get(Queue, queue_id)


async def delete_memberships_of_queue(session: AsyncSession, queue_id: uuid.UUID) -> None:
    await session.execute(delete(MEMBERS).where(MEMBERS.c.queue_id == queue_id))
