"""Rule sets as the engine reads them: the active one (cached briefly) and any version by id
(cached for good: a version never changes once saved), and where a new item goes by them.

Part of routing's repository, kept apart like queue_catalog.py: a cache with its own staleness
rule. Activating a version forgets the cache on commit; other processes route by the previous
version for at most RULES_CACHE_SECONDS.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts.routing import queue_catalog as catalog
from allot.contexts.routing.models import RuleSet
from allot.contexts.routing.queue_catalog import QueueRules
from allot.contexts.routing.rules import RuleSetDefinition, first_match, item_facts
from allot.kernel.cache import ShortLivedCache


@dataclass(frozen=True, slots=True)
class Rules:
    id: uuid.UUID
    version: int
    definition: RuleSetDefinition

    def filter_name(self, index: int | None) -> str | None:
        return self.definition.filters[index].name if index is not None else None


RULES_CACHE_SECONDS = 2.0
_NONE = "none"
_active: ShortLivedCache[Rules | str] = ShortLivedCache("routing.rules", RULES_CACHE_SECONDS)
_versions: dict[uuid.UUID, Rules] = {}  # immutable versions; a handful per deployment


def forget_rules_on_commit(session: AsyncSession) -> None:
    _active.forget_on_commit(session)


def rules_of(row: RuleSet) -> Rules:
    return Rules(row.id, row.version, RuleSetDefinition.model_validate(row.definition))


async def active_rules(session: AsyncSession) -> Rules | None:
    cached = _active.get("active")
    if cached is None:
        row = await session.scalar(select(RuleSet).where(RuleSet.status == "active"))
        cached = rules_of(row) if row is not None else _NONE
        _active.put("active", cached)
    return cached if isinstance(cached, Rules) else None


async def rules_by_id(session: AsyncSession, rule_set_id: uuid.UUID | None) -> Rules | None:
    if rule_set_id is None:
        return None
    rules = _versions.get(rule_set_id)
    if rules is None:
        row = await session.get(RuleSet, rule_set_id)
        if row is None:
            return None
        rules = _versions[rule_set_id] = rules_of(row)
    return rules


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a new item goes: its queue (None: none serves it), priority, and the rule that
    said so (for its time steps and the decision log)."""

    queue: QueueRules | None
    priority: int
    rules: Rules | None = None
    filter_index: int | None = None
    note: str | None = None

    @property
    def policy(self) -> str:
        if self.rules is None or self.filter_index is None:
            return "wait"
        return self.rules.definition.filters[self.filter_index].when_nobody_available

    def row_values(self, submitted_priority: int) -> dict[str, Any]:
        return {
            "submitted_priority": submitted_priority,
            "queue_id": self.queue.id if self.queue else None,
            "priority": self.priority,
            "rule_set_id": self.rules.id if self.rules else None,
            "rule_filter": self.filter_index,
            "steps_done": 0,
        }


async def place(
    session: AsyncSession,
    *,
    kind: str,
    attributes: dict[str, Any],
    priority: int,
    weight: int,
    rules: Rules | str | None = "active",
) -> Placement:
    """The queue and priority the rules give a new item (the active rules unless `rules` is
    given: the dry run and the simulator pass theirs)."""
    chosen = await active_rules(session) if rules == "active" else rules
    assert not isinstance(chosen, str)
    if chosen is not None:
        index = first_match(chosen.definition, item_facts(kind, priority, weight, attributes))
        if index is not None:
            rule = chosen.definition.filters[index]
            queue = await catalog.queue_by_name(session, rule.queue)
            if queue is not None:
                own = rule.priority if rule.priority is not None else priority
                if not rule.require.strip():
                    return Placement(queue, own, chosen, index)
                derived = await catalog.derived_queue(session, queue.id, rule.require)
                if derived is not None:
                    return Placement(derived, own, chosen, index)
                # Saving or activating the rule set sets it up; a pasted, unsaved rule set (dry
                # run, what-if) has none yet: the item goes to the queue itself, and says so.
                note = f"no queue yet for {rule.queue!r} with require {rule.require!r}"
                return Placement(queue, own, chosen, index, note=note)
            default = await catalog.queue_for_kind(session, kind)
            note = f"queue {rule.queue!r} of filter {rule.name!r} is not active"
            return Placement(default, priority, chosen, None, note=note)
    return Placement(await catalog.queue_for_kind(session, kind), priority, chosen)
