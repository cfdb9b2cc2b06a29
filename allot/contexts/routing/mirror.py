"""I4, the membership mirror: an agent's state copied into its rows of routing_queue_members
(same transaction, after every change of the agent's row), with its weighted round robin
position in each queue. Part of routing's repository (its SQL), kept apart for its size.
"""

from __future__ import annotations

import functools
import itertools
import uuid
from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import and_, bindparam, case, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts.routing.decision import tie_draw, vt_step, weighted_load
from allot.contexts.routing.models import EPOCH
from allot.contexts.routing.repository import MEMBERS, fixed_limit, takes_work


async def sync_memberships(
    session: AsyncSession,
    row: Any,
    today: date,
    month: str,
    *,
    reshuffle: bool = False,
    advance: tuple[uuid.UUID, int] | None = None,
    turned_eligible: bool = False,
) -> None:
    """I4: mirror the agent's state into its membership rows (same transaction). `advance`
    (queue, amount) moves the agent's virtual time in that queue: a reservation there.
    `turned_eligible`: an earlier change whose mirror was not written (a release, engine.py
    `fill_agent`) made the agent able to take work; its rows then catch up as that mirror would
    have made them, and this one mirror stands for both."""
    catch_up, params = _mirror(row, today, month, reshuffle, advance, turned_eligible)
    await session.execute(_sync_members_statement(_mirrored(reshuffle), catch_up), params)


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
        mirrors = [_mirror(row, today, month, reshuffle, moves.get(row.id), False) for row in rows]
        # In the given order (a row's catch-up reads the rows mirrored before it): one
        # executemany per run of rows taking the same statement, usually one in all.
        for catch_up, run in itertools.groupby(mirrors, key=lambda mirror: mirror[0]):
            statement = _sync_members_statement(_mirrored(reshuffle), catch_up)
            await session.execute(statement, [params for _, params in run])


def _mirrored(reshuffle: bool) -> tuple[str, ...]:
    columns = ("load", "spare", "eligible", "last_assigned_at", "idle_since", "weight",
               "weighted_load")  # fmt: skip
    return (*columns, "shuffle") if reshuffle else columns


def _mirror(
    row: Any,
    today: date,
    month: str,
    reshuffle: bool,
    advance: tuple[uuid.UUID, int] | None,
    turned_eligible: bool,
) -> tuple[bool, dict[str, Any]]:
    """The mirror's parameters, and whether its rows may turn eligible (the statement to run)."""
    weight = float(row.weight)
    values: dict[str, Any] = {
        "load": row.load,
        "spare": max(row.capacity - row.load, 0),
        "eligible": takes_work(row, today, month),
        "last_assigned_at": row.last_assigned_at or EPOCH,
        "idle_since": row.idle_since or EPOCH,
        "weight": weight,
        "weighted_load": weighted_load(row.load, weight),
    }
    if reshuffle:
        values["shuffle"] = tie_draw(row.id, values["last_assigned_at"], row.load)
    queue_id, amount = advance if advance is not None else (None, 0)
    return values["eligible"] or turned_eligible, {
        "p_agent_id": row.id,
        "p_queue_id": queue_id,
        "p_advance": amount,
        "p_turn": vt_step(weight),
        **{f"v_{name}": value for name, value in values.items()},
    }


@functools.cache
def _sync_members_statement(columns: tuple[str, ...], catch_up: bool) -> Any:
    """The mirror UPDATE of one agent's membership rows, with their weighted round robin
    position: a row that turns eligible starts no earlier than where the queue's next member to
    be served (the lowest `turn_end` among the others eligible: one probe of
    `ix_routing_members_round_robin`) started its turn, so time spent away, full or outside the
    queue is not a credit of turns to take at once; the reserving queue's row then moves on by
    `p_advance`, and `turn_end` is where the row's next turn ends (`p_turn`: its step).

    Two statements: with `catch_up` (the agent is eligible now, or an earlier mirror this one
    stands for made it so: `sync_memberships`), rows not eligible yet turn eligible; without,
    none can. Not one statement with that as a parameter: PostgreSQL then planned every
    execution anew (its custom plan, without the probes when the parameter is false, looked
    cheaper than the generic plan with them), ≈0.2 ms each time."""
    others = MEMBERS.alias("others")
    lowest = (
        select(others.c.virtual_time)
        .where(
            others.c.queue_id == MEMBERS.c.queue_id,
            others.c.eligible.is_(True),
            others.c.agent_id != MEMBERS.c.agent_id,
        )
        .order_by(others.c.turn_end, others.c.virtual_time)  # ties: one answer everywhere
        # Not `.limit(1)`, a parameter: the generic plan's guess for an unknown LIMIT made
        # PostgreSQL plan this UPDATE anew at every execution (see _candidates_statement).
        .limit(fixed_limit(1))
        .scalar_subquery()
    )
    eligible: Any = bindparam("v_eligible", type_=MEMBERS.c.eligible.type)
    start: Any = MEMBERS.c.virtual_time
    if catch_up:
        returning = MEMBERS.c.eligible.is_(False)
        start = case((and_(returning, lowest > start), lowest), else_=start)
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
