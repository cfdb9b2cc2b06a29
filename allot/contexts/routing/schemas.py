"""Request and response models of the routing API (and the DTOs of its public interface)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

AgentStatus = Literal["available", "away", "offline"]
Strategy = Literal["least_loaded", "most_available", "round_robin", "longest_idle", "score"]
OfferMode = Literal["direct", "offer", "broadcast"]


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    email: EmailStr | None = None
    capacity: int = Field(default=5, ge=0, le=1000, description="Units of work at once")
    skills: list[str] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)
    teams: list[str] = Field(default_factory=list)
    attributes: dict[str, Any] = Field(default_factory=dict, description="Any further facts")
    weight: float = Field(default=1.0, gt=0, le=100, description="Fair-share weight")
    capacity_by_kind: dict[str, int] = Field(default_factory=dict)
    daily_quota: int | None = Field(default=None, ge=0)
    monthly_quota: int | None = Field(default=None, ge=0)
    schedule: dict[str, Any] = Field(default_factory=dict)
    status: AgentStatus = "offline"


class AgentUpdate(BaseModel):
    """PATCH: a field left out keeps its value, null clears it. Quotas, the schedule and the
    skill/language/region/team lists can be cleared; the other fields cannot be null."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    capacity: int | None = Field(default=None, ge=0, le=1000)
    skills: list[str] | None = None
    languages: list[str] | None = None
    regions: list[str] | None = None
    teams: list[str] | None = None
    attributes: dict[str, Any] | None = None
    weight: float | None = Field(default=None, gt=0, le=100)
    capacity_by_kind: dict[str, int] | None = None
    daily_quota: int | None = Field(default=None, ge=0)
    monthly_quota: int | None = Field(default=None, ge=0)
    schedule: dict[str, Any] | None = None
    is_active: bool | None = None

    @field_validator("name", "capacity", "weight", "attributes", "capacity_by_kind", "is_active")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("Cannot be cleared; leave the field out to keep its value")
        return value


class AgentStatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: AgentStatus


class LeaveCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    starts_on: date
    ends_on: date
    reason: str | None = Field(default=None, max_length=200)


class AgentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID | None
    name: str
    email: str | None
    status: AgentStatus
    load: int
    capacity: int
    attributes: dict[str, Any]
    weight: float
    capacity_by_kind: dict[str, Any]
    is_active: bool
    on_leave: bool
    off_shift: bool
    daily_quota: int | None
    monthly_quota: int | None
    schedule: dict[str, Any]
    last_assigned_at: datetime | None
    last_heartbeat_at: datetime | None


class QueueCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    work_kinds: list[str] = Field(default_factory=lambda: ["lead"])
    member_expression: str = Field(
        default="", description='rule-engine syntax, e.g. `"loans" in skills and region == "msk"`'
    )
    member_teams: list[str] = Field(default_factory=list)
    strategy: Strategy = "least_loaded"
    scorer: str | None = None
    offer_mode: OfferMode = "direct"
    offer_timeout_seconds: int = Field(default=120, ge=5, le=86_400)
    broadcast_size: int = Field(default=3, ge=1, le=50)
    auto_away_after_misses: int | None = Field(default=None, ge=1, le=100)
    first_response_seconds: int | None = Field(default=None, ge=10)
    reclaim_grace_seconds: int = Field(default=300, ge=0, le=86_400)
    priority: int = 0


class QueueUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    work_kinds: list[str] | None = None
    member_expression: str | None = None
    member_teams: list[str] | None = None
    strategy: Strategy | None = None
    scorer: str | None = None
    offer_mode: OfferMode | None = None
    offer_timeout_seconds: int | None = Field(default=None, ge=5, le=86_400)
    broadcast_size: int | None = Field(default=None, ge=1, le=50)
    auto_away_after_misses: int | None = Field(default=None, ge=1, le=100)
    first_response_seconds: int | None = Field(default=None, ge=10)
    reclaim_grace_seconds: int | None = Field(default=None, ge=0, le=86_400)
    priority: int | None = None
    is_active: bool | None = None


class QueueOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    work_kinds: list[str]
    member_expression: str
    member_teams: list[str]
    strategy: Strategy
    scorer: str | None
    offer_mode: OfferMode
    offer_timeout_seconds: int
    broadcast_size: int
    auto_away_after_misses: int | None
    first_response_seconds: int | None
    reclaim_grace_seconds: int
    priority: int
    is_active: bool


class QueueStats(BaseModel):
    queue_id: uuid.UUID
    name: str
    waiting: int
    offered: int
    assigned: int
    longest_wait_seconds: float | None
    members: int
    available_members: int


class OfferOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    item_id: uuid.UUID
    agent_id: uuid.UUID
    status: str
    created_at: datetime
    expires_at: datetime
    responded_at: datetime | None
    reference: str | None = None
    kind: str | None = None


class WorkItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    reference: str
    kind: str
    priority: int
    weight: int
    queue_id: uuid.UUID | None
    state: str
    owner_agent_id: uuid.UUID | None
    created_at: datetime
    assigned_at: datetime | None
    first_response_due_at: datetime | None
    first_response_at: datetime | None


class SubmitResult(BaseModel):
    item_id: uuid.UUID
    state: str
    agent_id: uuid.UUID | None = None
    offer_ids: list[uuid.UUID] = Field(default_factory=list)
