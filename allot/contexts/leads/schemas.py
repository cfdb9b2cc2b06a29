"""Request and response models of the leads API. Requests forbid unknown fields (a 422 naming
the field); semantic rules live in the service, shared with the web form and imports."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from .models import Activity, Lead
from .pipeline import Pipeline, StatusDef

LostReason = Literal[
    "not_interested", "unreachable", "rejected", "competitor", "spam", "duplicate", "other"
]


class CustomerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="Full name as given")
    phone: str | None = Field(
        default=None, max_length=50, description="Any common notation; stored in E.164"
    )
    email: str | None = Field(default=None, max_length=320)


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_minor: StrictInt | None = Field(
        default=None,
        ge=0,
        description="Amount asked for, in minor units (kopecks): 150 000 ₽ is 15000000",
    )
    currency: str = Field(default="RUB", min_length=3, max_length=3, description="ISO 4217")
    term_months: StrictInt | None = Field(default=None, ge=1, le=600, description="Loan term")


class LeadCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "source": "website",
                    "external_id": "wf-10293",
                    "customer": {
                        "name": "Иван Петров",
                        "phone": "+7 912 345-67-89",
                        "email": "ivan@example.ru",
                    },
                    "product": {"amount_minor": 1500000, "currency": "RUB", "term_months": 12},
                    "attributes": {"region": "msk", "utm_source": "yandex"},
                    "priority": 10,
                }
            ]
        },
    )

    source: str = Field(
        min_length=1,
        max_length=64,
        description="Where the lead came from: lower-case letters, digits and `_.:-`",
    )
    external_id: str | None = Field(
        default=None,
        max_length=255,
        description="The lead's id at the source; a second lead with the same source and "
        "external id is a 409 whose body carries `existing_id`",
    )
    customer: CustomerIn
    attributes: dict[str, Any] = Field(
        default_factory=dict, description="Custom facts (JSON object, up to 16 KB)"
    )
    priority: StrictInt = Field(default=0, ge=-100, le=100, description="Higher is served first")
    product: ProductIn | None = Field(default=None, description="Loan amount and term")


class LeadUpdate(BaseModel):
    """PATCH: a field left out keeps its value; null clears it. `"product": {"term_months":
    null}` clears the term, `"product": null` the amount and the term, `"attributes": null`
    every attribute."""

    model_config = ConfigDict(extra="forbid")

    attributes: dict[str, Any] | None = Field(default=None, description="Replaces all of them")
    product: ProductIn | None = None

    @model_validator(mode="before")
    @classmethod
    def _null_clears(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "product" in data and data["product"] is None:
            data["product"] = {"amount_minor": None, "term_months": None}
        if "attributes" in data and data["attributes"] is None:
            data["attributes"] = {}
        return data


class StatusChange(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"status": "lost", "lost_reason": "unreachable"}]},
    )

    status: str = Field(min_length=1, max_length=64, description="Target status key")
    lost_reason: LostReason | None = Field(
        default=None,
        description="Only when moving to a terminal, not-won status. `spam` and `duplicate` "
        "cancel the routing item; any other outcome completes it.",
    )


class NoteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: str = Field(min_length=1, max_length=5000)


class ProductOut(BaseModel):
    amount_minor: int | None
    currency: str | None
    term_months: int | None


class CustomerSummary(BaseModel):
    id: uuid.UUID
    name: str | None
    phones: list[str]
    emails: list[str]


class LeadOut(BaseModel):
    id: uuid.UUID
    source: str
    external_id: str | None
    customer_id: uuid.UUID
    customer: CustomerSummary | None = Field(
        default=None, description="The customer's card (on GET only)"
    )
    status: str
    priority: int
    attributes: dict[str, Any]
    product: ProductOut
    assignee_id: uuid.UUID | None = Field(description="The agent working it; null while waiting")
    first_response_due_at: datetime | None
    first_responded_at: datetime | None
    sla: Literal["pending", "met", "breached"] | None = Field(
        description="First-response SLA: pending (not due yet), met, or breached"
    )
    lost_reason: str | None
    closed_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, lead: Lead, now: datetime, customer: Any | None = None) -> LeadOut:
        summary = None
        if customer is not None:
            summary = CustomerSummary(
                id=customer.id,
                name=customer.name,
                phones=list(customer.phones),
                emails=list(customer.emails),
            )
        return cls(
            id=lead.id,
            source=lead.source,
            external_id=lead.external_id,
            customer_id=lead.customer_id,
            customer=summary,
            status=lead.status,
            priority=lead.priority,
            attributes=lead.attributes or {},
            product=ProductOut(
                amount_minor=lead.amount_minor,
                currency=lead.currency,
                term_months=lead.term_months,
            ),
            assignee_id=lead.assignee_id,
            first_response_due_at=lead.first_response_due_at,
            first_responded_at=lead.first_responded_at,
            sla=lead.sla_state(now),
            lost_reason=lead.lost_reason,
            closed_at=lead.closed_at,
            created_at=lead.created_at,
            updated_at=lead.updated_at,
        )


class LeadPage(BaseModel):
    items: list[LeadOut]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` to get the next page; null on the last page"
    )


class TimelineEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID = Field(description="For a note, its `note_id`")
    kind: Literal["created", "status_changed", "assigned", "unassigned", "note"]
    created_at: datetime
    actor_kind: str
    actor_id: uuid.UUID | None
    actor_label: str
    from_status: str | None = None
    to_status: str | None = None
    agent_id: uuid.UUID | None = None
    reason: str | None = Field(default=None, description="Lost reason, or why (re)assigned")
    body: str | None = Field(default=None, description="The note's text")

    @classmethod
    def of(cls, row: Activity) -> TimelineEntry:
        return cls.model_validate(row)


class TimelinePage(BaseModel):
    items: list[TimelineEntry]
    next_cursor: str | None = None


# -- pipeline ---------------------------------------------------------------------------------
class Labels(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ru: str = Field(min_length=1, max_length=100)
    en: str = Field(min_length=1, max_length=100)


class StatusIO(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", examples=["in_progress"])
    labels: Labels
    order: int = Field(default=0, ge=0, le=10_000)
    initial: bool = Field(default=False, description="New leads start here; exactly one")
    terminal: bool = Field(default=False, description="Closes the lead; no way out")
    won: bool = Field(default=False, description="A successful end (terminal only)")


class TransitionIO(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str = Field(alias="from", examples=["new"])
    to: str = Field(examples=["in_progress"])


class PipelineIO(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "statuses": [
                        {"key": "new", "labels": {"ru": "Новый", "en": "New"}, "order": 10,
                         "initial": True},
                        {"key": "won", "labels": {"ru": "Успех", "en": "Won"}, "order": 20,
                         "terminal": True, "won": True},
                        {"key": "lost", "labels": {"ru": "Отказ", "en": "Lost"}, "order": 30,
                         "terminal": True},
                    ],
                    "transitions": [{"from": "new", "to": "won"}, {"from": "new", "to": "lost"}],
                }
            ]
        },
    )  # fmt: skip

    statuses: list[StatusIO] = Field(min_length=1, max_length=50)
    transitions: list[TransitionIO] = Field(max_length=500)

    def definition(self) -> Pipeline:
        return Pipeline(
            statuses=tuple(
                StatusDef(s.key, s.labels.ru, s.labels.en, s.order, s.initial, s.terminal, s.won)
                for s in self.statuses
            ),
            transitions=tuple((t.from_, t.to) for t in self.transitions),
        )

    @classmethod
    def of(cls, pipeline: Pipeline) -> PipelineIO:
        return cls(
            statuses=[
                StatusIO(
                    key=s.key,
                    labels=Labels(ru=s.label_ru, en=s.label_en),
                    order=s.order,
                    initial=s.initial,
                    terminal=s.terminal,
                    won=s.won,
                )
                for s in pipeline.statuses
            ],
            transitions=[TransitionIO(from_=a, to=b) for a, b in pipeline.transitions],
        )


class SlaPolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    first_response_seconds: StrictInt = Field(
        ge=60, le=30 * 86_400, description="Time from intake to the first response"
    )


class SlaPolicyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    source: str = Field(description="`*` applies to every source without its own row")
    first_response_seconds: int
    updated_at: datetime
