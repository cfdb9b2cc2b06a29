"""Scenario helpers for customers tests: plain functions with sensible defaults."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from sqlalchemy import select

from allot.contexts import customers
from allot.contexts.audit.models import AuditEntry
from allot.contexts.customers.models import Contact, Customer, ExternalId, TimelineEntry
from allot.kernel.db import Database
from tests.factories import auth_headers, make_user

_numbers = itertools.count(1)


async def intake(database: Database, **fields: Any) -> customers.CustomerRef:
    """One intake in a transaction of its own (source "form" unless given)."""
    fields.setdefault("source", "form")
    return await database.run(lambda session: customers.intake(session, **fields))


async def info(database: Database, customer_id: uuid.UUID) -> customers.CustomerInfo:
    async with database.reader() as session:
        found = await customers.get_customer(session, customer_id)
    assert found is not None, f"no customer {customer_id}"
    return found


async def staff(database: Database, *roles: str, locale: str = "en") -> dict[str, str]:
    """Bearer headers of a new user with `roles` (no password: nothing to hash)."""
    user = await make_user(
        database,
        email=f"staff{next(_numbers)}@example.ru",
        roles=roles or ("manager",),
        password=None,
        locale=locale,
    )
    return await auth_headers(database, user)


async def rows(database: Database, model: Any, *where: Any) -> list[Any]:
    async with database.reader() as session:
        return list((await session.execute(select(model).where(*where))).scalars())


async def contacts(database: Database) -> list[Contact]:
    return await rows(database, Contact)


async def cards(database: Database) -> list[Customer]:
    return await rows(database, Customer)


async def external_ids(database: Database) -> list[ExternalId]:
    return await rows(database, ExternalId)


async def timeline(database: Database, customer_id: uuid.UUID) -> list[TimelineEntry]:
    entries = await rows(database, TimelineEntry, TimelineEntry.customer_id == customer_id)
    return sorted(entries, key=lambda e: (e.occurred_at, e.id))


async def audit_of(database: Database, customer_id: uuid.UUID) -> list[AuditEntry]:
    entries = await rows(
        database,
        AuditEntry,
        AuditEntry.object_type == "customers.customer",
        AuditEntry.object_id == str(customer_id),
    )
    return sorted(entries, key=lambda e: e.id)
