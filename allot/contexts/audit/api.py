"""Audit JSON API: search and read. No write route exists, by design: entries are written only by
the services whose changes they record."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Query
from pydantic import AwareDatetime

from allot.kernel.auth import Principal, require
from allot.kernel.errors import ValidationFailed
from allot.kernel.pagination import Page, PageParams, page_params
from allot.kernel.web.routers import api_router
from allot.kernel.web.uow import ReadSession

from . import AUDIT_READ, service
from .repository import AuditFilter
from .schemas import AuditEntryOut

router = api_router("/audit", "audit")


def _utc(field: str, moment: datetime | None) -> datetime | None:
    try:
        return moment.astimezone(UTC) if moment is not None else None
    except OverflowError:  # 0001-01-01T00:00+03:00 has no UTC instant
        raise ValidationFailed.on(field, "Out of range") from None


@router.get("/entries", response_model=Page[AuditEntryOut], summary="Search the audit trail")
async def list_entries(
    session: ReadSession,
    page: Annotated[PageParams, Depends(page_params)],
    _: Principal = require(AUDIT_READ),
    object_type: Annotated[str | None, Query(max_length=100)] = None,
    object_id: Annotated[str | None, Query(max_length=255)] = None,
    actor_id: Annotated[uuid.UUID | None, Query(description="Who acted (user id)")] = None,
    actor_label: Annotated[str | None, Query(max_length=255)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    since: Annotated[
        AwareDatetime | None, Query(description="ISO 8601 with offset; inclusive")
    ] = None,
    until: Annotated[
        AwareDatetime | None, Query(description="ISO 8601 with offset; exclusive")
    ] = None,
) -> Page[AuditEntryOut]:
    """Newest first, filtered by object, actor, action and time range."""
    since, until = _utc("query.since", since), _utc("query.until", until)
    if since is not None and until is not None and until < since:
        raise ValidationFailed.on("query.until", "Must not be earlier than since")
    filters = AuditFilter(
        object_type=object_type, object_id=object_id, actor_id=actor_id,
        actor_label=actor_label, action=action, since=since, until=until,
    )  # fmt: skip
    entries, next_cursor = await service.search(session, filters, page)
    return Page[AuditEntryOut](
        items=[AuditEntryOut.model_validate(e) for e in entries], next_cursor=next_cursor
    )


@router.get("/entries/{entry_id}", response_model=AuditEntryOut, summary="One audit entry")
async def get_entry(
    entry_id: uuid.UUID, session: ReadSession, _: Principal = require(AUDIT_READ)
) -> AuditEntryOut:
    return AuditEntryOut.model_validate(await service.get_entry(session, entry_id))
