"""Request and response models of rule sets, the dry run and the decision log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from allot.contexts.routing.rules import RuleSetDefinition


class RuleSetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    comment: str | None = Field(None, max_length=2000)
    definition: RuleSetDefinition
    activate: bool = Field(False, description="Make this version the active one at once")


class RuleSetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    version: int
    name: str
    comment: str | None
    status: str = Field(description="draft | active | retired")
    definition: dict[str, Any]
    created_at: datetime
    created_by_label: str
    activated_at: datetime | None


class DryRunItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field("lead", min_length=1, max_length=64)
    attributes: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(0, ge=0, le=1_000_000)
    weight: int = Field(1, ge=1, le=1000)


class DryRunRequest(BaseModel):
    """Which rules (pasted, a stored version, or the active one) for which item (described, or
    an existing item by its reference, e.g. `lead:<id>`)."""

    model_config = ConfigDict(extra="forbid")

    definition: RuleSetDefinition | None = None
    rule_set_id: uuid.UUID | None = None
    reference: str | None = Field(None, max_length=255)
    item: DryRunItem | None = None

    @model_validator(mode="after")
    def _one_of_each(self) -> DryRunRequest:
        if self.definition is not None and self.rule_set_id is not None:
            raise ValueError("Give `definition` or `rule_set_id`, not both")
        if (self.reference is None) == (self.item is None):
            raise ValueError("Give exactly one of `reference` and `item`")
        return self


class AgentRef(BaseModel):
    id: uuid.UUID
    name: str | None


class CandidateOut(BaseModel):
    agent: AgentRef
    rank: int
    load: int
    spare: int
    last_assigned_at: datetime
    idle_since: datetime
    shuffle: float
    score: float | None = None


class ExcludedOut(BaseModel):
    agent: AgentRef
    reasons: list[str] = Field(description="Stable codes, see explain.py")


class FilterCheck(BaseModel):
    index: int
    name: str
    matched: bool


class StepPreview(BaseModel):
    after_seconds: int
    does: str


class DryRunOut(BaseModel):
    rule_set_version: int | None = Field(description="None for a pasted or no rule set")
    filters: list[FilterCheck] = Field(description="Each filter tried, in order, until a match")
    matched_filter: str | None
    queue: str | None
    priority: int
    note: str | None
    strategy: str | None
    would_get: AgentRef | None = Field(description="Who would get the item right now")
    candidates: list[CandidateOut]
    tie_break: str | None
    excluded: list[ExcludedOut]
    excluded_truncated: bool
    when_nobody_available: str
    steps: list[StepPreview] = Field(description="What happens while nobody owns the item")
    ttl_seconds: int | None


class DecisionOut(BaseModel):
    id: uuid.UUID
    item_id: uuid.UUID
    occurred_at: datetime
    trigger: str = Field(description="submitted | rerouted | capacity_freed | accepted | …")
    outcome: str = Field(description="assigned | offered | waiting | expired")
    queue_id: uuid.UUID | None
    queue: str | None
    rule_set_version: int | None
    rule_filter: str | None
    strategy: str | None
    agents: list[AgentRef] = Field(description="Who got the item (or its offers)")
    candidates: list[CandidateOut] = Field(description="The best candidates, best first")
    tie_break: str | None = Field(
        description="The first compared value that separated the chosen agent from the next"
    )
    policy: str | None = Field(description="What the item did because nobody could take it")
    excluded: list[ExcludedOut]
    excluded_truncated: bool
    note: str | None
