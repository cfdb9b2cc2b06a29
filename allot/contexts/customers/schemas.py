"""Customer data shapes: the public read-only views other contexts get (`CustomerRef`,
`CustomerInfo`) and the Pydantic request/response models of the JSON API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .models import EXTERNAL_ID_MAX_LENGTH, NAME_MAX_LENGTH, SOURCE_MAX_LENGTH

MAX_CONTACTS_PER_REQUEST = 20


# -- the public interface ---------------------------------------------------------------------
@dataclass(frozen=True)
class CustomerRef:
    id: uuid.UUID
    created: bool


@dataclass(frozen=True)
class CustomerInfo:
    id: uuid.UUID
    kind: str
    name: str | None
    phones: tuple[str, ...]
    emails: tuple[str, ...]
    external_ids: tuple[tuple[str, str], ...]  # (source, external_id)
    source: str
    consent: bool | None
    created_at: datetime
    merged_into_id: uuid.UUID | None


# -- requests ---------------------------------------------------------------------------------
CustomerKind = Literal["person", "company"]


class ExternalIdIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=SOURCE_MAX_LENGTH, examples=["bitrix24"])
    external_id: str = Field(min_length=1, max_length=EXTERNAL_ID_MAX_LENGTH, examples=["C-1042"])


class CustomerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: CustomerKind = "person"
    name: str | None = Field(default=None, max_length=NAME_MAX_LENGTH, examples=["Иван Петров"])
    phones: list[str] = Field(
        default_factory=list,
        max_length=MAX_CONTACTS_PER_REQUEST,
        description="Any common notation; stored as E.164 (region RU by default)",
        examples=[["8 912 345-67-89"]],
    )
    emails: list[str] = Field(default_factory=list, max_length=MAX_CONTACTS_PER_REQUEST)
    external_ids: list[ExternalIdIn] = Field(
        default_factory=list, max_length=MAX_CONTACTS_PER_REQUEST
    )
    consent: bool | None = Field(
        default=None, description="Consent to process personal data; null: not asked"
    )
    source: str = Field(default="manual", min_length=1, max_length=SOURCE_MAX_LENGTH)


class CustomerUpdate(BaseModel):
    """Only the fields sent change; `phones` and `emails` replace the card's whole list. null
    clears: `"name": null` removes the name, `"emails": null` every e-mail (as `[]` does).
    `kind` and `consent` cannot be null."""

    model_config = ConfigDict(extra="forbid")

    kind: CustomerKind | None = None
    name: str | None = Field(default=None, max_length=NAME_MAX_LENGTH)
    phones: list[str] | None = Field(default=None, max_length=MAX_CONTACTS_PER_REQUEST)
    emails: list[str] | None = Field(default=None, max_length=MAX_CONTACTS_PER_REQUEST)
    consent: bool | None = None

    @field_validator("kind", "consent")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("Cannot be cleared; leave the field out to keep its value")
        return value


class MergeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_id: uuid.UUID = Field(description="The card merged away; it points at this one after")


# -- responses --------------------------------------------------------------------------------
class ExternalIdOut(BaseModel):
    source: str
    external_id: str


class ContactOut(BaseModel):
    kind: str
    value: str
    source: str
    created_at: datetime


class TimelineEntryOut(BaseModel):
    id: uuid.UUID
    occurred_at: datetime
    kind: str
    title: str = Field(description="In the caller's language")
    reference: str | None
    data: dict[str, Any]


class CustomerOut(BaseModel):
    id: uuid.UUID
    kind: str
    name: str | None
    phones: list[str]
    emails: list[str]
    external_ids: list[ExternalIdOut]
    source: str
    consent: bool | None
    created_at: datetime
    merged_into_id: uuid.UUID | None

    @classmethod
    def of(cls, info: CustomerInfo) -> CustomerOut:
        return cls(
            id=info.id,
            kind=info.kind,
            name=info.name,
            phones=list(info.phones),
            emails=list(info.emails),
            external_ids=[ExternalIdOut(source=s, external_id=e) for s, e in info.external_ids],
            source=info.source,
            consent=info.consent,
            created_at=info.created_at,
            merged_into_id=info.merged_into_id,
        )


class CustomerDetailOut(CustomerOut):
    consent_source: str | None
    consent_at: datetime | None
    erased_at: datetime | None
    contacts: list[ContactOut]
    timeline: list[TimelineEntryOut] = Field(description="The latest 50 entries, newest first")
