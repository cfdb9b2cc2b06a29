"""Scenario helpers for leads tests: plain functions with sensible defaults."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from sqlalchemy import select

from allot.contexts import leads, routing
from allot.contexts.audit.models import AuditEntry
from allot.contexts.leads import service
from allot.contexts.leads.access import SYSTEM, Viewer
from allot.contexts.leads.models import Activity, Lead
from allot.kernel.db import Database
from allot.kernel.events import OutboxEvent
from tests.contexts.routing.helpers import make_agent, make_queue
from tests.factories import auth_headers, make_user

_numbers = itertools.count(1)


def lead_body(**overrides: Any) -> dict[str, Any]:
    n = next(_numbers)
    body: dict[str, Any] = {
        "source": "website",
        "external_id": f"ext-{n}",
        "customer": {
            "name": f"Иван Петров {n}",
            "phone": f"+7 912 000-{n // 100:02d}-{n % 100:02d}",
        },
    }
    body.update(overrides)
    return body


async def lead_desk(database: Database, *, agents: int = 1, capacity: int = 2) -> list[Any]:
    """A direct-mode queue for leads and `agents` available agents."""
    await make_queue(database)
    return [await make_agent(database, capacity=capacity) for _ in range(agents)]


async def new_lead(database: Database, **fields: Any) -> Lead:
    n = next(_numbers)
    values: dict[str, Any] = {
        "source": "website",
        "customer_name": f"Мария {n}",
        "customer_phone": f"+7 913 100-{n // 100:02d}-{n % 100:02d}",
    }
    values.update(fields)
    async with database.transaction() as session:
        return await leads.create_lead(session, leads.NewLead(**values))


async def move(database: Database, lead_id: uuid.UUID, status: str, **kwargs: Any) -> Lead:
    async with database.transaction() as session:
        return await service.change_status(session, lead_id, status, SYSTEM, **kwargs)


async def note(database: Database, lead_id: uuid.UUID, body: str, viewer: Viewer = SYSTEM) -> Any:
    async with database.transaction() as session:
        return await service.add_note(session, lead_id, body, viewer)


async def stored(database: Database, lead_id: uuid.UUID) -> Lead:
    async with database.reader() as session:
        lead = await session.get(Lead, lead_id)
    assert lead is not None
    return lead


async def item_of(database: Database, lead_id: uuid.UUID) -> Any:
    async with database.reader() as session:
        return await routing.item_by_reference(session, f"lead:{lead_id}")


async def activities(database: Database, lead_id: uuid.UUID) -> list[Activity]:
    async with database.reader() as session:
        rows = await session.execute(
            select(Activity).where(Activity.lead_id == lead_id).order_by(Activity.id)
        )
        return list(rows.scalars())


async def events_of(database: Database, event_type: str) -> list[OutboxEvent]:
    async with database.reader() as session:
        rows = await session.execute(
            select(OutboxEvent).where(OutboxEvent.type == event_type).order_by(OutboxEvent.id)
        )
        return list(rows.scalars())


async def audit_of(database: Database, object_id: Any) -> list[AuditEntry]:
    async with database.reader() as session:
        rows = await session.execute(
            select(AuditEntry).where(AuditEntry.object_id == str(object_id)).order_by(AuditEntry.id)
        )
        return list(rows.scalars())


async def caller(database: Database, *roles: str, locale: str = "en") -> dict[str, str]:
    """Bearer headers of a new user with `roles`."""
    user = await make_user(database, roles=roles, locale=locale)
    return await auth_headers(database, user)


async def operator_agent(database: Database, *, capacity: int = 5) -> tuple[Any, dict[str, str]]:
    """An operator who is an available agent of the lead queue, and their bearer headers."""
    user = await make_user(database, roles=("operator",))
    agent = await make_agent(database, capacity=capacity, email=user.email)
    return agent, await auth_headers(database, user)
