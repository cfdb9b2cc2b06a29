"""Rule sets: save a version (validated), activate one, read the history, dry-run.

Versions are immutable: editing saves a new version. At most one is active (the partial unique
index `uq_routing_rule_sets_active`); activating retires the previous one in the same
transaction. Every save and activation is audited and published.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts import audit
from allot.contexts.routing import decision_log, events, explain, queue_service, rule_catalog
from allot.contexts.routing import queue_catalog as catalog
from allot.contexts.routing import repository as repo
from allot.contexts.routing.decision import get_scorer, rank
from allot.contexts.routing.engine import DIRECT_CANDIDATES
from allot.contexts.routing.flow import Moment
from allot.contexts.routing.models import RuleSet, WorkItem
from allot.contexts.routing.rule_catalog import Rules
from allot.contexts.routing.rule_schemas import DryRunRequest, RuleSetCreate
from allot.contexts.routing.rules import RuleSetDefinition, check_definition, item_facts, ttl_of
from allot.contexts.routing.statistics import agent_names
from allot.kernel.clock import utcnow
from allot.kernel.context import current_actor
from allot.kernel.db.engine import insert_ignoring_conflicts
from allot.kernel.errors import Conflict, NotFound, ValidationFailed
from allot.kernel.events import publish
from allot.kernel.ids import new_id

RULE_SETS = RuleSet.__table__


async def _known_queues(session: AsyncSession) -> set[str]:
    """The queues rules can name: active ones, derived queues aside (rules name their base)."""
    queues = await catalog.active_queues(session)
    return {queue.name for queue in queues if queue.base_queue_id is None}


async def list_rule_sets(session: AsyncSession) -> list[RuleSet]:
    result = await session.execute(select(RuleSet).order_by(RuleSet.version.desc()))
    return list(result.scalars())


async def get_rule_set(session: AsyncSession, rule_set_id: uuid.UUID) -> RuleSet:
    rule_set = await session.get(RuleSet, rule_set_id)
    if rule_set is None:
        raise NotFound(detail="No such rule set")
    return rule_set


async def create_rule_set(session: AsyncSession, body: RuleSetCreate) -> RuleSet:
    """Save a new version (a draft unless `activate`). Versions number 1, 2, 3…; two saved at
    the same instant cannot get one number (unique index): the second is told to retry."""
    check_definition(body.definition, await _known_queues(session))
    version = (await session.scalar(select(func.max(RuleSet.version)))) or 0
    rule_set_id = new_id()
    row: dict[str, Any] = {
        "id": rule_set_id,
        "version": version + 1,
        "name": body.name,
        "comment": body.comment,
        "definition": body.definition.model_dump(mode="json"),
        "status": "draft",
        "created_at": utcnow(),
        "created_by_label": current_actor().label[:255],
        "activated_at": None,
    }
    inserted: Any = await session.execute(insert_ignoring_conflicts(session, RULE_SETS), row)
    if inserted.rowcount != 1:
        raise Conflict(detail="Another version was saved at the same moment; save again")
    await queue_service.ensure_derived_queues(session, body.definition)
    await audit.record(
        session,
        action="routing.rule_set.created",
        object_type="routing.rule_set",
        object_id=rule_set_id,
        after={"version": row["version"], "name": body.name, "definition": row["definition"]},
    )
    if body.activate:
        return await activate_rule_set(session, rule_set_id)
    return await get_rule_set(session, rule_set_id)


async def activate_rule_set(session: AsyncSession, rule_set_id: uuid.UUID) -> RuleSet:
    """Make this version the one new items are routed by (items already placed keep the
    version they were placed by, for their remaining time steps)."""
    rule_set = await get_rule_set(session, rule_set_id)
    definition = RuleSetDefinition.model_validate(rule_set.definition)
    # Queues may have been renamed or switched off since the version was saved.
    check_definition(definition, await _known_queues(session), field="rule_set.definition")
    await queue_service.ensure_derived_queues(session, definition)
    previous = await session.scalar(select(RuleSet).where(RuleSet.status == "active"))
    if previous is not None and previous.id == rule_set.id:
        return rule_set
    now = utcnow()
    await session.execute(
        update(RuleSet).where(RuleSet.status == "active").values(status="retired")
    )
    await session.execute(
        update(RuleSet)
        .where(RuleSet.id == rule_set.id)
        .values(status="active", activated_at=now)
        .execution_options(synchronize_session="fetch")
    )
    await session.refresh(rule_set)
    rule_catalog.forget_rules_on_commit(session)
    await audit.record(
        session,
        action="routing.rule_set.activated",
        object_type="routing.rule_set",
        object_id=rule_set.id,
        before={"active_version": previous.version if previous else None},
        after={"active_version": rule_set.version},
    )
    await publish(
        session,
        type=events.RULE_SET_ACTIVATED,
        aggregate_type="routing.rule_set",
        aggregate_id=rule_set.id,
        payload={"rule_set_id": str(rule_set.id), "version": rule_set.version},
    )
    return rule_set


async def deactivate_rules(session: AsyncSession) -> RuleSet | None:
    """No rules: items go to the highest-priority queue of their kind again."""
    previous = await session.scalar(select(RuleSet).where(RuleSet.status == "active"))
    if previous is None:
        return None
    previous.status = "retired"
    rule_catalog.forget_rules_on_commit(session)
    await audit.record(
        session,
        action="routing.rule_set.deactivated",
        object_type="routing.rule_set",
        object_id=previous.id,
        before={"active_version": previous.version},
        after={"active_version": None},
    )
    return previous


async def dry_run(session: AsyncSession, body: DryRunRequest) -> dict[str, Any]:
    """What the rules would do with the item right now: each filter tried, the queue, who would
    get it and why, who is left out and why, and its time steps. Writes nothing."""
    rules: Rules | None
    if body.definition is not None:
        check_definition(body.definition, await _known_queues(session))
        rules = Rules(uuid.UUID(int=0), 0, body.definition)
    elif body.rule_set_id is not None:
        rules = rule_catalog.rules_of(await get_rule_set(session, body.rule_set_id))
    else:
        rules = await rule_catalog.active_rules(session)
    if body.reference is not None:
        item = await session.scalar(select(WorkItem).where(WorkItem.reference == body.reference))
        if item is None:
            raise ValidationFailed.on("body.reference", "No work item with this reference")
        kind, attributes = item.kind, dict(item.attributes or {})
        priority, weight = item.submitted_priority, item.weight
    else:
        assert body.item is not None
        kind, attributes = body.item.kind, body.item.attributes
        priority, weight = body.item.priority, body.item.weight
    placement = await rule_catalog.place(
        session, kind=kind, attributes=attributes, priority=priority, weight=weight, rules=rules
    )
    facts = item_facts(kind, priority, weight, attributes)
    filters = _filter_checks(rules.definition if rules else None, facts, placement.filter_index)
    return await _who_would_get_it(session, rules, placement, filters, attributes, weight)


def _filter_checks(
    definition: RuleSetDefinition | None, facts: dict[str, Any], matched: int | None
) -> list[dict[str, Any]]:
    if definition is None:
        return []
    last = matched if matched is not None else len(definition.filters) - 1
    return [
        {"index": n, "name": rule.name, "matched": n == matched}
        for n, rule in enumerate(definition.filters[: last + 1])
    ]


async def _who_would_get_it(
    session: AsyncSession,
    rules: Rules | None,
    placement: rule_catalog.Placement,
    filters: list[dict[str, Any]],
    attributes: dict[str, Any],
    weight: int,
) -> dict[str, Any]:
    queue = placement.queue
    ranked: list[Any] = []
    excluded: dict[uuid.UUID, list[str]] = {}
    truncated = False
    if queue is not None:
        scored = queue.strategy == "score"
        found = await repo.top_candidates(
            session, queue_id=queue.id, strategy=queue.strategy, weight=weight,
            item_id=uuid.uuid4(), limit=50 if scored else DIRECT_CANDIDATES,
            with_attributes=scored,
        )  # fmt: skip
        ranked = rank(queue.strategy, found, attributes, queue.scorer)
        excluded, truncated = await decision_log.excluded_members(
            session, queue_id=queue.id, weight=weight, moment=Moment.read()
        )
    scores = None
    if queue is not None and queue.strategy == "score":
        score = get_scorer(queue.scorer)
        scores = {c.agent_id: round(score(attributes, c), 6) for c in ranked[:5]}
    facts = explain.candidate_facts(ranked, scores)
    names = await agent_names(session, {c.agent_id for c in ranked[:5]} | set(excluded))
    rule = (
        rules.definition.filters[placement.filter_index]
        if rules and placement.filter_index is not None
        else None
    )
    return {
        "rule_set_version": rules.version if rules and rules.version else None,
        "filters": filters,
        "matched_filter": rule.name if rule else None,
        "queue": queue.name if queue else None,
        "priority": placement.priority,
        "note": placement.note,
        "strategy": queue.strategy if queue else None,
        "would_get": _ref(ranked[0].agent_id, names) if ranked else None,
        "candidates": [_candidate(fact, names) for fact in facts],
        "tie_break": explain.tie_break(queue.strategy if queue else None, facts),
        "excluded": [{"agent": _ref(a, names), "reasons": r} for a, r in excluded.items()],
        "excluded_truncated": truncated,
        "when_nobody_available": placement.policy,
        "steps": [{"after_seconds": s.after_seconds, "does": _step_text(s)} for s in rule.steps]
        if rule
        else [],
        "ttl_seconds": ttl_of(rules.definition, placement.filter_index) if rules else None,
    }


def _ref(agent_id: uuid.UUID, names: dict[uuid.UUID, str]) -> dict[str, Any]:
    return {"id": agent_id, "name": names.get(agent_id)}


def _candidate(fact: dict[str, Any], names: dict[uuid.UUID, str]) -> dict[str, Any]:
    agent_id = uuid.UUID(fact["agent_id"])
    return {**fact, "agent": _ref(agent_id, names)}


def _step_text(step: Any) -> str:
    parts = []
    if step.queue:
        parts.append(f"move to {step.queue}")
    if step.priority is not None:
        parts.append(f"priority {step.priority}")
    if step.raise_priority:
        parts.append(f"priority +{step.raise_priority}")
    if step.relax:
        parts.append("relax require")
    parts += [f"notify {who}" for who in step.notify]
    return ", ".join(parts)
