"""The backlog head probe: the best waiting item an agent could take, found and locked.

Part of routing's repository (its SQL), kept apart because of one trap worth reading in one
place: PostgreSQL's generic plan for a prepared `state = $n` cannot use the partial index of
waiting items, so the probe writes its constants into the SQL text (`sql_constant`), and it
probes each of the agent's queues at its index head rather than sorting every waiting item.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, exists, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from allot.contexts.routing.models import WorkItem
from allot.contexts.routing.repository import (
    EXCLUDING_OFFER_STATUSES,
    ITEMS,
    KIND_LOADS,
    MEMBERS,
    OFFERS,
    fixed_limit,
    in_states,
    sql_constant,
)


@dataclass(frozen=True, slots=True)
class BacklogHead:
    """The head item, and whether the agent caps its kind (`reserve_capacity`'s `kind_capped`:
    read with the head, so the reservation does not look for a per-kind cap on its own)."""

    item: WorkItem
    kind_capped: bool

    @property
    def id(self) -> uuid.UUID:
        return self.item.id

    @property
    def queue_id(self) -> uuid.UUID | None:
        return self.item.queue_id


async def next_backlog_item(
    session: AsyncSession, agent_id: uuid.UUID, spare: int
) -> BacklogHead | None:
    """The best waiting item (priority, then age) in any queue the agent belongs to, locked.

    Each of the agent's queues is probed at the head of its partial index
    `ix_routing_items_waiting` (a single ORDER BY over all the agent's queues made SQLite scan
    and sort every waiting item instead): on PostgreSQL all in one statement, a LATERAL probe per
    membership; on SQLite, which has no LATERAL, one statement per queue (no round trip there).
    The head comes back as the session's WorkItem, fresh from its locked row (no other query
    for it), with whether the agent caps its kind."""
    options = {"populate_existing": True}
    params: dict[str, Any] = {"p_agent_id": agent_id, "p_spare": spare}
    bind = session.bind
    if bind is not None and bind.dialect.name == "postgresql":
        result = await session.execute(_heads_statement(), params, execution_options=options)
        row = result.first()
        return BacklogHead(row[0], bool(row[1])) if row is not None else None
    queue_ids = list(
        (await session.execute(_agent_queues_statement(), {"p_agent_id": agent_id})).scalars()
    )
    best: BacklogHead | None = None
    for queue_id in queue_ids:
        result = await session.execute(
            _queue_head_statement(), {**params, "p_queue_id": queue_id}, execution_options=options
        )
        row = result.first()
        if row is not None and (best is None or _backlog_order(row[0]) < _backlog_order(best.item)):
            best = BacklogHead(row[0], bool(row[1]))
    return best


def _backlog_order(item: WorkItem) -> tuple[Any, ...]:
    return (-item.priority, item.enqueued_at, item.id)


@functools.cache
def _agent_queues_statement() -> Any:
    return select(MEMBERS.c.queue_id).where(MEMBERS.c.agent_id == bindparam("p_agent_id"))


def _head_select(queue_id: Any) -> Any:
    kind_capped = exists().where(
        KIND_LOADS.c.agent_id == bindparam("p_agent_id"), KIND_LOADS.c.kind == ITEMS.c.kind
    )
    return (
        select(ITEMS, kind_capped.label("kind_capped"))
        .where(
            ITEMS.c.queue_id == queue_id,
            # `'waiting'` in the SQL text, not a parameter: asyncpg runs this as a prepared
            # statement, and PostgreSQL's generic plan for `state = $2` cannot use the partial
            # index (`WHERE state = 'waiting'`); it read, anti-joined and sorted every waiting
            # item instead (27 ms at 8,000 waiting, against 0.05 ms for the index head).
            ITEMS.c.state == sql_constant("waiting"),
            ITEMS.c.weight <= bindparam("p_spare"),
            ~exists().where(
                OFFERS.c.item_id == ITEMS.c.id,
                OFFERS.c.agent_id == bindparam("p_agent_id"),
                in_states(OFFERS.c.status, EXCLUDING_OFFER_STATUSES),
            ),
        )
        .order_by(ITEMS.c.priority.desc(), ITEMS.c.enqueued_at, ITEMS.c.id)
        .limit(fixed_limit(1))  # see _candidates_statement
        # Item before agent, like every other path; an item another transaction is placing is
        # skipped rather than waited for (PostgreSQL; SQLite's single writer needs neither).
        .with_for_update(skip_locked=True, of=ITEMS)
    )


@functools.cache
def _queue_head_statement() -> Any:
    head = _head_select(bindparam("p_queue_id"))
    return select(WorkItem, head.selected_columns.kind_capped).from_statement(head)


@functools.cache
def _heads_statement() -> Any:
    heads = _head_select(MEMBERS.c.queue_id).lateral("head")
    head = aliased(WorkItem, heads)
    return (
        select(head, heads.c.kind_capped)
        .select_from(MEMBERS)
        .join(heads, true())
        .where(MEMBERS.c.agent_id == bindparam("p_agent_id"))
        .order_by(heads.c.priority.desc(), heads.c.enqueued_at, heads.c.id)
        .limit(fixed_limit(1))
    )
