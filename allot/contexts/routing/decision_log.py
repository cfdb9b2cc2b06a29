"""The decision log: one append-only row per routing decision, and the pool snapshot it cites.

Part of routing's repository (all its SQL is here), kept apart because every decision path
writes through it. Rows are deferred inserts (written in one executemany at commit), so a
decision costs no round trip of its own; the pool snapshot costs one bounded read, and is not
written at all when every member of the queue could take the item.

Bounded cost (the engine's selection must not grow with the pool): the snapshot reads at most
SNAPSHOT_LIMIT members who cannot take the item, from the membership index's `eligible` prefix,
and says when there were more (`truncated`).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Integer, Table, bindparam, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts.routing.decision import get_scorer
from allot.contexts.routing.explain import candidate_facts, exclusion_reasons, tie_break
from allot.contexts.routing.models import Decision, PoolSnapshot
from allot.contexts.routing.queue_catalog import QueueRules, queue_rules
from allot.contexts.routing.repository import (
    AGENT_STATE_COLUMNS,
    AGENTS,
    MEMBERS,
    OFFERS,
    fixed_limit,
    in_states,
)
from allot.kernel.db.deferred import defer_insert
from allot.kernel.ids import new_id

DECISIONS: Table = Decision.__table__  # type: ignore[assignment]
SNAPSHOTS: Table = PoolSnapshot.__table__  # type: ignore[assignment]
SNAPSHOT_LIMIT = 50
NEVER_AGAIN_STATUSES = ("declined", "timed_out", "reclaimed")


@functools.cache
def _excluded_statement(heavy: bool) -> Any:
    # For a weight-1 item `eligible = false` is the whole test (eligible implies spare > 0), an
    # equality prefix of the membership indexes; heavier items also exclude eligible members
    # short of spare capacity.
    unable: Any = MEMBERS.c.eligible.is_(False)
    if heavy:
        unable = or_(unable, MEMBERS.c.spare < bindparam("p_weight", type_=Integer()))
    return (
        select(*AGENT_STATE_COLUMNS)
        .join(MEMBERS, MEMBERS.c.agent_id == AGENTS.c.id)
        .where(MEMBERS.c.queue_id == bindparam("p_queue_id"), unable)
        .order_by(AGENTS.c.id)
        .limit(fixed_limit(SNAPSHOT_LIMIT + 1))
    )


@functools.cache
def _lacking_requirement_statement() -> Any:
    # A derived queue (a rule's `require`) holds its base queue's members who meet the
    # requirement: the others are left out for it ("skill"). Read through the base queue's
    # membership prefix, bounded like the rest of the snapshot.
    derived = MEMBERS.alias("derived")
    return (
        select(MEMBERS.c.agent_id)
        .where(
            MEMBERS.c.queue_id == bindparam("p_base_id"),
            ~exists().where(
                derived.c.queue_id == bindparam("p_queue_id"),
                derived.c.agent_id == MEMBERS.c.agent_id,
            ),
        )
        .order_by(MEMBERS.c.agent_id)
        .limit(fixed_limit(SNAPSHOT_LIMIT + 1))
    )


@functools.cache
def _declined_statement() -> Any:
    return select(OFFERS.c.agent_id).where(
        OFFERS.c.item_id == bindparam("p_item_id"),
        in_states(OFFERS.c.status, NEVER_AGAIN_STATUSES),
    )


async def excluded_members(
    session: AsyncSession,
    *,
    queue_id: uuid.UUID,
    weight: int,
    moment: Any,
    item_id: uuid.UUID | None = None,
    busy: Iterable[uuid.UUID] = (),
) -> tuple[dict[uuid.UUID, list[str]], bool]:
    """Who in the queue cannot take the item and why, and whether there were more than
    SNAPSHOT_LIMIT. `item_id` is given for an item routed before (agents who declined it are
    left out); `busy` lists agents another transaction was placing work with (placement.py).
    In a derived queue, the base queue's members who do not meet its requirement are left out
    as `not_member`."""
    params = {"p_queue_id": queue_id, "p_weight": weight}
    rows = (await session.execute(_excluded_statement(weight > 1), params)).all()
    reasons: dict[uuid.UUID, list[str]] = {}
    for row in rows[:SNAPSHOT_LIMIT]:
        found = exclusion_reasons(row, weight, moment.today, moment.month)
        reasons[row.id] = found or ["over_capacity"]
    truncated = len(rows) > SNAPSHOT_LIMIT
    queue = await queue_rules(session, queue_id)
    if queue is not None and queue.base_queue_id is not None:
        lacking = (
            await session.execute(
                _lacking_requirement_statement(),
                {"p_base_id": queue.base_queue_id, "p_queue_id": queue_id},
            )
        ).scalars().all()  # fmt: skip
        for agent_id in lacking[:SNAPSHOT_LIMIT]:
            reasons[agent_id] = ["not_member"]
        truncated = truncated or len(lacking) > SNAPSHOT_LIMIT
    if item_id is not None:
        declined = await session.execute(_declined_statement(), {"p_item_id": item_id})
        for agent_id in declined.scalars():
            reasons.setdefault(agent_id, []).append("declined_before")
    for agent_id in busy:
        reasons.setdefault(agent_id, []).append("busy_elsewhere")
    return reasons, truncated


async def snapshot_pool(
    session: AsyncSession,
    *,
    queue_id: uuid.UUID,
    weight: int,
    moment: Any,
    item_id: uuid.UUID | None = None,
    busy: Iterable[uuid.UUID] = (),
) -> uuid.UUID | None:
    """Record `excluded_members` for the decisions about to cite it; None when nobody was
    left out (no row written)."""
    reasons, truncated = await excluded_members(
        session, queue_id=queue_id, weight=weight, moment=moment, item_id=item_id, busy=busy
    )
    if not reasons:
        return None
    snapshot_id = new_id()
    excluded = [{"agent_id": str(a), "reasons": r} for a, r in reasons.items()]
    defer_insert(
        session,
        SNAPSHOTS,
        {
            "id": snapshot_id,
            "queue_id": queue_id,
            "taken_at": moment.now,
            "excluded": excluded,
            "truncated": truncated,
        },
    )
    return snapshot_id


def record(session: AsyncSession, **fields: Any) -> None:
    """Log one decision (the keywords of `decision_row`), written at commit."""
    defer_insert(session, DECISIONS, decision_row(**fields))


def decision_row(
    *,
    item_id: uuid.UUID,
    moment: Any,
    trigger: str,
    outcome: str,
    queue_id: uuid.UUID | None = None,
    strategy: str | None = None,
    agent_ids: Sequence[uuid.UUID] = (),
    candidates: list[dict[str, Any]] | None = None,
    tie_break: str | None = None,
    rule_set_id: uuid.UUID | None = None,
    rule_filter: str | None = None,
    policy: str | None = None,
    snapshot_id: uuid.UUID | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    return {
        "id": new_id(),
        "item_id": item_id,
        "occurred_at": moment.now,
        "trigger": trigger,
        "outcome": outcome,
        "queue_id": queue_id,
        "rule_set_id": rule_set_id,
        "rule_filter": rule_filter,
        "strategy": strategy,
        "agent_ids": [str(a) for a in agent_ids],
        "candidates": candidates or [],
        "tie_break": tie_break,
        "policy": policy,
        "snapshot_id": snapshot_id,
        "note": note,
    }


async def decisions_of(session: AsyncSession, item_id: uuid.UUID) -> list[tuple[Any, Any]]:
    """The item's decisions, oldest first, each with its pool snapshot (or None)."""
    decisions = list(
        (
            await session.execute(
                select(Decision)
                .where(Decision.item_id == item_id)
                .order_by(Decision.occurred_at, Decision.id)
            )
        ).scalars()
    )
    snapshot_ids = {d.snapshot_id for d in decisions if d.snapshot_id is not None}
    snapshots: dict[uuid.UUID, PoolSnapshot] = {}
    if snapshot_ids:
        rows = await session.execute(select(PoolSnapshot).where(PoolSnapshot.id.in_(snapshot_ids)))
        snapshots = {s.id: s for s in rows.scalars()}
    return [(d, snapshots.get(d.snapshot_id) if d.snapshot_id else None) for d in decisions]


async def log_route(
    session: AsyncSession,
    item: Any,
    queue: QueueRules,
    at: Any,
    trigger: str,
    result: Any,
    ranked: list[Any],
    chosen: list[uuid.UUID],
    policy: str,
    rules: Any,
) -> None:
    """The decision `engine.route` just took (`rules`: the item's rule set, or None): the
    candidates as ranked, the pool snapshot of who was left out, the outcome."""
    scores = None
    if queue.strategy == "score":
        score = get_scorer(queue.scorer)
        scores = {c.agent_id: round(score(item.attributes or {}, c), 6) for c in ranked[:5]}
    facts = candidate_facts(ranked, scores)
    snapshot_id = await snapshot_pool(
        session,
        queue_id=queue.id,
        weight=item.weight,
        moment=at,
        # Only an item routed before can have been declined; a submitted one is new.
        item_id=item.id if trigger != "submitted" else None,
    )
    record(
        session,
        item_id=item.id,
        moment=at,
        trigger=trigger,
        outcome=result.state,
        queue_id=queue.id,
        strategy=queue.strategy,
        agent_ids=chosen,
        candidates=facts,
        tie_break=tie_break(queue.strategy, facts),
        rule_set_id=item.rule_set_id,
        rule_filter=rules.filter_name(item.rule_filter) if rules else None,
        policy=policy if result.state == "waiting" else None,
        snapshot_id=snapshot_id,
    )
