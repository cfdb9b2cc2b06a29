"""Escalation: a rule's time steps, ageing and TTL acting on items nobody owns yet.

A step with `relax` moves an item from its filter's derived queue (the members who satisfy the
filter's `require`) to the base queue; the item is then routed again there (trigger
`escalated`), like a widening step. An item no longer in a derived queue (an earlier step moved
it) is not moved by `relax`.

One durable timer per unowned item under rules (`routing.escalation`, key `esc:<item>`), due at
the item's next step, ageing tick or TTL (rules.next_due), measured on the item's age. The
engine schedules it whenever an item is left waiting or offered; the handler (tasks.py) applies
what is due, routes the item again if its queue or priority changed, and schedules the next.
An item that gets an owner simply lets its timer fire into nothing: the handler re-checks the
state under the item's row lock, and an owned item is never escalated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from allot.contexts.routing import events
from allot.contexts.routing import queue_catalog as catalog
from allot.contexts.routing import repository as repo
from allot.contexts.routing.models import WorkItem
from allot.contexts.routing.queue_catalog import QueueRules
from allot.contexts.routing.rule_catalog import Rules
from allot.contexts.routing.rules import (
    TICK_TOLERANCE,
    Filter,
    aged_priority,
    ageing_ticks,
    next_due,
    steps_due,
    ttl_of,
)
from allot.kernel import timers
from allot.kernel.events import publish

ESCALATION = "routing.escalation"
UNOWNED = ("waiting", "offered")


def rule_of(rules: Rules | None, item: WorkItem) -> Filter | None:
    if rules is None or item.rule_filter is None:
        return None
    filters = rules.definition.filters
    return filters[item.rule_filter] if item.rule_filter < len(filters) else None


def _age(item: WorkItem, now: Any) -> float:
    return float((now - item.created_at).total_seconds())


async def schedule_next(
    session: AsyncSession,
    item: WorkItem,
    rules: Rules,
    now: Any,
    ageing_since: float | None = None,
) -> None:
    """Set the item's escalation timer to its next due age. `ageing_since` (the age its ageing
    period started at) defaults to now: ageing counts time spent unowned since then."""
    since = _age(item, now) if ageing_since is None else ageing_since
    due = next_due(
        rules.definition, item.rule_filter, steps_done=item.steps_done, priority=item.priority,
        ageing_since=since,
    )  # fmt: skip
    if due is None:
        return
    fire_at = max(item.created_at + timedelta(seconds=due), now)
    payload = {"item_id": str(item.id), "ageing_since": since}
    await timers.schedule(session, ESCALATION, fire_at, payload, key=f"esc:{item.id}")


async def publish_escalated(
    session: AsyncSession, item: WorkItem, *, reason: str, notify: list[str], **extra: Any
) -> None:
    await publish(
        session,
        type=events.ITEM_ESCALATED,
        aggregate_type="routing.item",
        aggregate_id=item.id,
        payload={
            "item_id": str(item.id),
            "reference": item.reference,
            "kind": item.kind,
            "queue_id": str(item.queue_id) if item.queue_id else None,
            "reason": reason,
            "notify": notify,
            "priority": item.priority,
            **extra,
        },
    )


async def move(session: AsyncSession, item: WorkItem, **values: Any) -> bool:
    """Change an unowned item's queue / priority / steps done (only while it is unowned)."""
    moved = await repo.set_item_state(
        session, item.id, from_states=UNOWNED, to_state=item.state, **values
    )
    if moved:
        for name, value in values.items():
            set_committed_value(item, name, value)
    return moved


@dataclass(slots=True)
class DueActions:
    """What `apply_due` leaves to the caller: expire the item, or route it again in a queue;
    and the age the next ageing period counts from."""

    ageing_since: float
    expire: bool = False
    reroute_in: QueueRules | None = None


async def apply_due(
    session: AsyncSession, item: WorkItem, rules: Rules, now: Any, ageing_since: float
) -> DueActions:
    """Apply what the item's age has reached: its TTL (nothing else then), else its due steps
    in order (each publishing an escalation) and its ageing ticks. The item is unowned."""
    definition, age = rules.definition, _age(item, now)
    ttl = ttl_of(definition, item.rule_filter)
    if ttl is not None and age + TICK_TOLERANCE >= ttl:
        return DueActions(ageing_since, expire=True)
    rule = rule_of(rules, item)
    queue_id, priority = item.queue_id, item.priority
    due_steps = steps_due(definition, item.rule_filter, item.steps_done, age)
    for n in due_steps:
        assert rule is not None
        step = rule.steps[n]
        if step.queue is not None:
            target = await catalog.queue_by_name(session, step.queue)
            if target is not None:
                queue_id = target.id
        relaxed_to = None
        if step.relax and queue_id is not None:
            # The filter's `require` no longer applies: from its derived queue to the base.
            current = await catalog.queue_rules(session, queue_id)
            if current is not None and current.base_queue_id is not None:
                queue_id = current.base_queue_id
                base = await catalog.queue_rules(session, queue_id)
                relaxed_to = base.name if base is not None else None
        if step.priority is not None:
            priority = step.priority
        if step.raise_priority:
            priority += step.raise_priority
        await publish_escalated(
            session, item, reason="step", notify=list(step.notify), step=n,
            after_seconds=step.after_seconds, moved_to=step.queue or relaxed_to,
            new_priority=priority, relaxed=step.relax,
        )  # fmt: skip
    ticks = ageing_ticks(definition, ageing_since, age)
    if ticks and definition.ageing is not None:
        priority = aged_priority(definition, priority, ticks)
        ageing_since += ticks * definition.ageing.every_seconds
    changed = (queue_id, priority) != (item.queue_id, item.priority)
    values: dict[str, Any] = {"steps_done": item.steps_done + len(due_steps)}
    if changed:
        values |= {"queue_id": queue_id, "priority": priority}
    await move(session, item, **values)
    done = DueActions(ageing_since)
    if changed and item.state == "waiting" and queue_id is not None:
        done.reroute_in = await catalog.queue_rules(session, queue_id)
    return done
