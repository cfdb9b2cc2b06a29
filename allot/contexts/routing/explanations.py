"""Reading the decision log: an item's decisions with agent, queue and rule names, for the API
(`GET /api/v1/routing/decisions`) and for other contexts' pages (the lead page's "why")."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts.routing import decision_log
from allot.contexts.routing.models import Queue, RuleSet, WorkItem
from allot.contexts.routing.statistics import agent_names


async def item_id_of(session: AsyncSession, reference: str) -> uuid.UUID | None:
    found: uuid.UUID | None = await session.scalar(
        select(WorkItem.id).where(WorkItem.reference == reference)
    )
    return found


async def decisions_for(session: AsyncSession, item_id: uuid.UUID) -> list[dict[str, Any]]:
    """The item's decisions, oldest first, as `DecisionOut` documents them."""
    logged = await decision_log.decisions_of(session, item_id)
    agent_ids: set[uuid.UUID] = set()
    queue_ids: set[uuid.UUID] = set()
    rule_ids: set[uuid.UUID] = set()
    for decision, snapshot in logged:
        agent_ids.update(uuid.UUID(a) for a in decision.agent_ids)
        agent_ids.update(uuid.UUID(c["agent_id"]) for c in decision.candidates)
        if snapshot is not None:
            agent_ids.update(uuid.UUID(e["agent_id"]) for e in snapshot.excluded)
        if decision.queue_id is not None:
            queue_ids.add(decision.queue_id)
        if decision.rule_set_id is not None:
            rule_ids.add(decision.rule_set_id)
    names = await agent_names(session, agent_ids)
    queues = await _names(session, Queue, queue_ids)
    versions: dict[uuid.UUID, int] = {}
    if rule_ids:
        rows = await session.execute(
            select(RuleSet.id, RuleSet.version).where(RuleSet.id.in_(rule_ids))
        )
        versions = {row.id: row.version for row in rows}

    def ref(agent_id: str) -> dict[str, Any]:
        key = uuid.UUID(agent_id)
        return {"id": key, "name": names.get(key)}

    def left_out(decision: Any, snapshot: Any) -> list[dict[str, Any]]:
        # The snapshot is read after the decision's own reservation (and a batch shares one per
        # queue), so the agent it chose may show as full by then: whoever this decision chose or
        # ranked was not left out of it.
        if snapshot is None:
            return []
        considered = {*decision.agent_ids, *(c["agent_id"] for c in decision.candidates)}
        return [
            {"agent": ref(e["agent_id"]), "reasons": e["reasons"]}
            for e in snapshot.excluded
            if e["agent_id"] not in considered
        ]

    return [
        {
            "id": decision.id,
            "item_id": decision.item_id,
            "occurred_at": decision.occurred_at,
            "trigger": decision.trigger,
            "outcome": decision.outcome,
            "queue_id": decision.queue_id,
            "queue": queues.get(decision.queue_id) if decision.queue_id else None,
            "rule_set_version": versions.get(decision.rule_set_id),
            "rule_filter": decision.rule_filter,
            "strategy": decision.strategy,
            "agents": [ref(a) for a in decision.agent_ids],
            "candidates": [{**c, "agent": ref(c["agent_id"])} for c in decision.candidates],
            "tie_break": decision.tie_break,
            "policy": decision.policy,
            "excluded": left_out(decision, snapshot),
            "excluded_truncated": bool(snapshot.truncated) if snapshot is not None else False,
            "note": decision.note,
        }
        for decision, snapshot in logged
    ]


async def _names(session: AsyncSession, model: Any, ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not ids:
        return {}
    rows = await session.execute(select(model.id, model.name).where(model.id.in_(ids)))
    return {row.id: row.name for row in rows}


async def decisions_for_reference(session: AsyncSession, reference: str) -> list[dict[str, Any]]:
    """`decisions_for` the item submitted as `reference` (e.g. `lead:<id>`); [] if none."""
    item_id = await item_id_of(session, reference)
    return await decisions_for(session, item_id) if item_id is not None else []
