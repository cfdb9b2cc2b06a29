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
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts.routing.decision import Candidate
from allot.contexts.routing.models import (
    BUSY,
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
    stmt = _candidates_statement(strategy, with_attributes, limit if weight == 1 else limit * 4)
    params = {"p_queue_id": queue_id, "p_item_id": item_id}
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


def fixed_limit(value: int) -> Any:
    """A LIMIT written into the SQL text when the statement is built (`literal_limit`'s plan,
    without rendering the SQL again at every execution): for statements built once per limit."""
    return literal_column(str(int(value)), Integer())


def sql_constant(value: str) -> Any:
    """A string constant written into the SQL text itself (only for our own constants): no
    parameter for PostgreSQL's generic plan to guess at (backlog_probe.py), and no expanding
    IN list for SQLAlchemy to render again at every execution of a statement built once."""
    assert value.replace("_", "").isalnum(), value
    return literal_column(f"'{value}'")


def in_states(column: Any, states: Sequence[str]) -> Any:
    return column.in_([sql_constant(state) for state in states])


# The intake path's statements are built once (functools.cache) and run with bound parameters:
# building and hashing a statement costs more than SQLite takes to run it.
@functools.cache
def _candidates_statement(strategy: str, with_attributes: bool, limit: int) -> Any:
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
                in_states(OFFERS.c.status, EXCLUDING_OFFER_STATUSES),
            ),
        )
        .order_by(*_ORDER[strategy])
        # Written into the SQL, not sent as a parameter: PostgreSQL's generic plan for a
        # prepared statement with an unknown LIMIT sorts the whole range instead of walking the
        # index and stopping. One statement per limit (a handful: the queue's offer mode).
        .limit(fixed_limit(limit))
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
        params = {"p_agent_id": agent_id, "p_kind": kind}
        if await session.scalar(_kind_capped_statement(), params):
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
def _kind_capped_statement() -> Any:
    return (
        select(func.count())
        .select_from(KIND_LOADS)
        .where(
            KIND_LOADS.c.agent_id == bindparam("p_agent_id"),
            KIND_LOADS.c.kind == bindparam("p_kind"),
        )
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
    params = {"p_agent_id": agent_id, "p_today": today, "p_month": month}
    return (await session.execute(_count_assignment_statement(), params)).first()


@functools.cache
def _count_assignment_statement() -> Any:
    today: Any = bindparam("p_today", type_=AGENTS.c.quota_day.type)
    return (
        update(AGENTS)
        .where(AGENTS.c.id == bindparam("p_agent_id"))
        .values(**_quota_increment(today, bindparam("p_month")))
        .returning(*AGENT_STATE_COLUMNS)
    )


async def release_capacity(
    session: AsyncSession, *, agent_id: uuid.UUID, weight: int, kind: str, now: datetime
) -> Any:
    """I1: take `weight` off the agent's load (and off its per-kind load if it caps `kind`).

    Most agents cap no kind: the first UPDATE only matches an agent without a cap on `kind`, so
    they cost one statement. One with a cap (or broken accounting) is released the way every
    reservation locks: its per-kind row first, then the agent's (the failed UPDATE locked
    nothing), so a release and a reservation of the same agent cannot deadlock."""
    params = {"p_agent_id": agent_id, "p_weight": weight, "p_now": now, "p_kind": kind}
    row = (await session.execute(_release_statement(uncapped_only=True), params)).first()
    if row is None:
        await _release_kind(session, agent_id, kind, weight)
        del params["p_kind"]
        row = (await session.execute(_release_statement(uncapped_only=False), params)).first()
    if row is None:
        raise RuntimeError(f"Capacity accounting broken for agent {agent_id}: load < {weight}")
    return row


@functools.cache
def _release_statement(*, uncapped_only: bool) -> Any:
    weight: Any = bindparam("p_weight", type_=Integer())
    now: Any = bindparam("p_now", type_=AGENTS.c.idle_since.type)
    conditions = [AGENTS.c.id == bindparam("p_agent_id"), AGENTS.c.load >= weight]
    if uncapped_only:
        conditions.append(
            ~exists().where(
                KIND_LOADS.c.agent_id == AGENTS.c.id,
                KIND_LOADS.c.kind == bindparam("p_kind", type_=KIND_LOADS.c.kind.type),
            )
        )
    return (
        update(AGENTS)
        .where(*conditions)
        .values(
            load=AGENTS.c.load - weight,
            idle_since=case((AGENTS.c.load - weight == 0, now), else_=AGENTS.c.idle_since),
        )
        .returning(*AGENT_STATE_COLUMNS)
    )


async def _release_kind(session: AsyncSession, agent_id: uuid.UUID, kind: str, weight: int) -> None:
    params = {"p_agent_id": agent_id, "p_kind": kind, "p_weight": weight}
    await session.execute(_release_kind_statement(), params)


@functools.cache
def _release_kind_statement() -> Any:
    return (
        update(KIND_LOADS)
        .where(
            KIND_LOADS.c.agent_id == bindparam("p_agent_id"),
            KIND_LOADS.c.kind == bindparam("p_kind"),
        )
        .values(load=KIND_LOADS.c.load - bindparam("p_weight", type_=Integer()))
    )


def takes_work(row: Any, today: date, month: str) -> bool:
    """Whether the agent (its state row) can take work now: its memberships' `eligible`."""
    can_take = (
        row.status == "available" and row.is_active and not row.on_leave and not row.off_shift
    )
    return bool(can_take and row.capacity > row.load and quota_ok(row, today, month))


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


async def load_agent_state(session: AsyncSession, agent_id: uuid.UUID) -> Any:
    return (await session.execute(_agent_state_statement(), {"p_agent_id": agent_id})).one()


@functools.cache
def _agent_state_statement() -> Any:
    return select(*AGENT_STATE_COLUMNS).where(AGENTS.c.id == bindparam("p_agent_id"))


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
        .where(ITEMS.c.id == bindparam("p_item_id"), in_states(ITEMS.c.state, from_states))
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
    stmt = _item_state_statement(tuple(from_states), tuple(values))
    params = {"p_item_id": item_id, "v_state": to_state}
    params.update({f"v_{name}": value for name, value in values.items()})
    result: Any = await session.execute(stmt, params)
    return bool(result.rowcount == 1)


@functools.cache
def _item_state_statement(from_states: tuple[str, ...], columns: tuple[str, ...]) -> Any:
    values = {name: bindparam(f"v_{name}", type_=ITEMS.c[name].type) for name in columns}
    return (
        update(ITEMS)
        .where(ITEMS.c.id == bindparam("p_item_id"), in_states(ITEMS.c.state, from_states))
        .values(state=bindparam("v_state", type_=ITEMS.c.state.type), **values)
    )


async def insert_offer(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(_insert_offer_statement(), values)


@functools.cache
def _insert_offer_statement() -> Any:
    return insert(OFFERS)


async def set_offer_status(
    session: AsyncSession,
    offer_id: uuid.UUID,
    *,
    to_status: str,
    now: datetime,
    agent_id: uuid.UUID | None = None,
) -> Any | None:
    """pending -> to_status, once. Returns the offer row, or None if it was no longer pending."""
    params = {"p_offer_id": offer_id, "p_status": to_status, "p_now": now, "p_agent_id": agent_id}
    return (await session.execute(_offer_status_statement(agent_id is not None), params)).first()


@functools.cache
def _offer_status_statement(of_agent: bool) -> Any:
    conditions = [
        OFFERS.c.id == bindparam("p_offer_id"),
        OFFERS.c.status == sql_constant("pending"),
    ]
    if of_agent:
        conditions.append(OFFERS.c.agent_id == bindparam("p_agent_id"))
    return (
        update(OFFERS)
        .where(*conditions)
        .values(
            status=bindparam("p_status", type_=OFFERS.c.status.type),
            responded_at=bindparam("p_now", type_=OFFERS.c.responded_at.type),
        )
        .returning(OFFERS.c.id, OFFERS.c.item_id, OFFERS.c.agent_id, OFFERS.c.weight)
    )


async def offer_item_id(session: AsyncSession, offer_id: uuid.UUID) -> uuid.UUID | None:
    item_id: uuid.UUID | None = await session.scalar(
        _offer_item_statement(), {"p_offer_id": offer_id}
    )
    return item_id


@functools.cache
def _offer_item_statement() -> Any:
    return select(OFFERS.c.item_id).where(OFFERS.c.id == bindparam("p_offer_id"))


async def lock_item(session: AsyncSession, item_id: uuid.UUID) -> None:
    """Row lock on PostgreSQL (SQLite's single writer already serialises)."""
    await session.execute(_lock_item_statement(), {"p_item_id": item_id})


@functools.cache
def _lock_item_statement() -> Any:
    return select(ITEMS.c.id).where(ITEMS.c.id == bindparam("p_item_id")).with_for_update()


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
    return list((await session.execute(_item_offers_statement(), {"p_item_id": item_id})).all())


@functools.cache
def _item_offers_statement() -> Any:
    return (
        select(OFFERS.c.id, OFFERS.c.agent_id, OFFERS.c.weight)
        .where(
            OFFERS.c.item_id == bindparam("p_item_id"), OFFERS.c.status == sql_constant("pending")
        )
        .order_by(OFFERS.c.id)
    )


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
