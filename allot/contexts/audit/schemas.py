"""API shapes of the audit trail (read-only: there is no request body anywhere in this API)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    occurred_at: datetime
    actor_kind: str = Field(description="user, token or system")
    actor_id: uuid.UUID | None
    actor_label: str = Field(description="Who acted, as shown then (a pseudonym once erased)")
    action: str = Field(examples=["identity.user.updated"])
    object_type: str = Field(examples=["identity.user"])
    object_id: str
    before: dict[str, Any] | None = Field(description="Field values before; null on creation")
    after: dict[str, Any] | None = Field(description="Field values after; null on removal")
    changed_fields: list[str]
    personal_fields: list[str] = Field(
        description="Fields holding personal data; pseudonymised when the person is erased"
    )
    request_id: str | None
    correlation_id: str | None
    summary: str | None
    pseudonymised_at: datetime | None
