"""Routing rules: which queue an item goes to, and what happens while nobody takes it.

A rule set is data (`RuleSetDefinition`), validated on save and versioned (rule_service.py).
This module is pure — no I/O, no clock — so the live engine, the dry run and the what-if
simulator read a rule set the same way.

Semantics (TaskRouter's, see shared/reference/routing.md A1, with Allot's additions):
- filters are tried top-down; the first whose `when` matches the item chooses its queue and
  priority. An item no filter matches goes to the highest-priority active queue serving its
  kind, as without rules ("default");
- steps are measured on the item's AGE (from intake, cumulative: a step at 60 s and one at
  180 s fire at ages 60 and 180), and act only while nobody owns the item: widen to another
  queue, relax the filter's `require` (back to the base queue: every member again), set or
  raise its priority, tell the manager, tell the customer (an escalation event each; the
  notifications context turns them into messages);
- `ttl_seconds`: an item still unowned at that age ends `expired`;
- `when_nobody_available`: what an item does when its queue has no agent who can take it right
  now — `wait` (in the queue, the default), `fallback` (to `fallback_queue` at once) or
  `escalate` (wait, and tell the manager at once) — recorded in the item's decision;
- `ageing`: an unowned item gains `raise_by` priority every `every_seconds` up to `up_to`, so
  nothing starves behind a stream of higher-priority work.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import rule_engine
from pydantic import BaseModel, ConfigDict, Field, model_validator

from allot.contexts.routing.expressions import compile_expression, expression_error
from allot.kernel.errors import FieldError, ValidationFailed

NOTIFY_TARGETS = ("manager", "customer")
NOBODY_POLICIES = ("wait", "fallback", "escalate")
MAX_AGE_SECONDS = 14 * 24 * 3600  # TaskRouter's TTL ceiling: 14 days
TICK_TOLERANCE = 1e-6  # seconds: timers are stored to the microsecond


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Step(_Strict):
    """What happens to an unowned item when it reaches `after_seconds` of age."""

    after_seconds: int = Field(gt=0, le=MAX_AGE_SECONDS, description="Item age, in seconds")
    queue: str | None = Field(None, description="Move the item to this queue (widen)")
    priority: int | None = Field(None, ge=0, le=1_000_000, description="Set the priority")
    raise_priority: int | None = Field(None, gt=0, le=1_000_000, description="Add to priority")
    notify: list[Literal["manager", "customer"]] = Field(
        default_factory=list, description="Publish an escalation for these audiences"
    )
    relax: bool = Field(
        False,
        description=(
            "Drop the filter's `require`: the item moves from the derived queue to the filter's "
            "queue, where every member can take it"
        ),
    )

    @model_validator(mode="after")
    def _does_something(self) -> Step:
        acts = self.queue is not None or self.priority is not None or self.raise_priority
        if not acts and not self.notify and not self.relax:
            raise ValueError("A step must move, reprioritise or notify")
        return self


class Filter(_Strict):
    name: str = Field(min_length=1, max_length=100)
    when: str = Field(
        "",
        max_length=2000,
        description=(
            "Condition on the item (kind, priority, weight and its attributes, e.g. "
            '`source == "site" and amount_minor >= 50000000`); empty matches every item'
        ),
    )
    queue: str = Field(min_length=1, max_length=200, description="The queue's name")
    require: str = Field(
        "",
        max_length=2000,
        description=(
            "Only the queue's members satisfying this agent expression (e.g. "
            "`'big_loans' in skills`) take the item, until a step relaxes it"
        ),
    )
    priority: int | None = Field(None, ge=0, le=1_000_000, description="Replaces the item's")
    steps: list[Step] = Field(default_factory=list, max_length=20)
    ttl_seconds: int | None = Field(None, gt=0, le=MAX_AGE_SECONDS)
    when_nobody_available: Literal["wait", "fallback", "escalate"] = "wait"
    fallback_queue: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Filter:
        ages = [step.after_seconds for step in self.steps]
        if ages != sorted(set(ages)):
            raise ValueError("Steps must be in increasing order of after_seconds")
        if self.ttl_seconds is not None and ages and ages[-1] >= self.ttl_seconds:
            raise ValueError("Every step must come before ttl_seconds")
        if (self.when_nobody_available == "fallback") != (self.fallback_queue is not None):
            raise ValueError("fallback_queue is required with, and only with, 'fallback'")
        return self


class Ageing(_Strict):
    every_seconds: int = Field(gt=0, le=MAX_AGE_SECONDS)
    raise_by: int = Field(1, gt=0, le=1000)
    up_to: int = Field(gt=0, le=1_000_000)


class RuleSetDefinition(_Strict):
    filters: list[Filter] = Field(default_factory=list, max_length=200)
    ttl_seconds: int | None = Field(
        None, gt=0, le=MAX_AGE_SECONDS, description="For filters without their own"
    )
    ageing: Ageing | None = None

    def queue_names(self) -> set[str]:
        names = set()
        for rule in self.filters:
            names.add(rule.queue)
            names.update(step.queue for step in rule.steps if step.queue)
            if rule.fallback_queue:
                names.add(rule.fallback_queue)
        return names


def check_definition(
    definition: RuleSetDefinition, known_queues: set[str], field: str = "body.definition"
) -> None:
    """The checks Pydantic cannot make: expressions compile, named queues exist. All problems
    are reported at once, each naming its place (`body.definition.filters.2.when`)."""
    problems: list[FieldError] = []
    for n, rule in enumerate(definition.filters):
        where = f"{field}.filters.{n}"
        message = expression_error(rule.when)
        if message is not None:
            problems.append(FieldError(f"{where}.when", message, "expression_syntax"))
        message = expression_error(rule.require)
        if message is not None:
            problems.append(FieldError(f"{where}.require", message, "expression_syntax"))
        for s, step in enumerate(rule.steps):
            if step.relax and not rule.require.strip():
                problems.append(
                    FieldError(
                        f"{where}.steps.{s}.relax",
                        "Nothing to relax: the filter has no require",
                        "nothing_to_relax",
                    )
                )
        named = [("queue", rule.queue), ("fallback_queue", rule.fallback_queue)]
        named += [(f"steps.{s}.queue", step.queue) for s, step in enumerate(rule.steps)]
        for key, name in named:
            if name is not None and name not in known_queues:
                problems.append(
                    FieldError(f"{where}.{key}", f"No active queue named {name!r}", "unknown_queue")
                )
    if problems:
        detail = "; ".join(f"{p.field}: {p.message}" for p in problems[:5])
        raise ValidationFailed(detail=detail, errors=problems)


def item_facts(kind: str, priority: int, weight: int, attributes: dict[str, Any]) -> dict[str, Any]:
    """What a filter's `when` can test: the item's attributes, then its own fields (which win)."""
    return {**attributes, "kind": kind, "priority": priority, "weight": weight}


def first_match(definition: RuleSetDefinition, facts: dict[str, Any]) -> int | None:
    """The index of the first filter matching the item, or None (the default applies)."""
    for n, rule in enumerate(definition.filters):
        compiled = compile_expression(rule.when)
        if compiled is None:
            return n  # an empty condition matches everything
        with contextlib.suppress(rule_engine.EngineError):  # a type mismatch: no match
            if compiled.matches(facts):
                return n
    return None


def ttl_of(definition: RuleSetDefinition, filter_index: int | None) -> int | None:
    rule = definition.filters[filter_index] if filter_index is not None else None
    if rule is not None and rule.ttl_seconds is not None:
        return rule.ttl_seconds
    return definition.ttl_seconds


def next_due(
    definition: RuleSetDefinition,
    filter_index: int | None,
    *,
    steps_done: int,
    priority: int,
    ageing_since: float,
) -> float | None:
    """The item age (seconds) at which its next step, ageing tick or TTL is due, or None when
    nothing ever will be. `ageing_since` is the age its ageing period last started at."""
    ages: list[float] = []
    rule = definition.filters[filter_index] if filter_index is not None else None
    if rule is not None and steps_done < len(rule.steps):
        ages.append(rule.steps[steps_done].after_seconds)
    ageing = definition.ageing
    if ageing is not None and priority < ageing.up_to:
        ages.append(ageing_since + ageing.every_seconds)
    ttl = ttl_of(definition, filter_index)
    if ttl is not None:
        ages.append(ttl)
    return min(ages) if ages else None


def steps_due(
    definition: RuleSetDefinition, filter_index: int | None, steps_done: int, age: float
) -> list[int]:
    """Indexes of the steps not yet done that the item's age has reached, in order."""
    if filter_index is None:
        return []
    steps = definition.filters[filter_index].steps
    reached = age + TICK_TOLERANCE
    return [n for n in range(steps_done, len(steps)) if steps[n].after_seconds <= reached]


def ageing_ticks(definition: RuleSetDefinition, ageing_since: float, age: float) -> int:
    ageing = definition.ageing
    if ageing is None or age < ageing_since:
        return 0
    # A timer due at a tick fires at that age to the microsecond, which in float seconds can
    # come out a hair short (599.9999999999999): a tick is reached within a microsecond of it,
    # or the timer would fire, see no tick, and come due again at once.
    return int((age - ageing_since + TICK_TOLERANCE) // ageing.every_seconds)


def aged_priority(definition: RuleSetDefinition, priority: int, ticks: int) -> int:
    """Priority after `ticks` ageing periods: raised by `raise_by` each, never above `up_to`
    (and never lowered: an item already above the ceiling keeps its priority)."""
    ageing = definition.ageing
    if ageing is None or ticks <= 0 or priority >= ageing.up_to:
        return priority
    return min(ageing.up_to, priority + ageing.raise_by * ticks)
