"""Helpers for audit tests: actors, reading the trail back, signed-in API callers."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from allot.contexts.audit.models import AuditEntry
from allot.kernel.context import Actor
from allot.kernel.db import Database


def user_actor(label: str, user_id: uuid.UUID | None = None) -> Actor:
    return Actor(kind="user", id=user_id or uuid.uuid4(), label=label)


async def entry_of(database: Database, entry_id: uuid.UUID) -> AuditEntry:
    async with database.reader() as session:
        entry = await session.get(AuditEntry, entry_id)
    assert entry is not None, f"no audit entry {entry_id}"
    return entry


async def all_entries(database: Database) -> list[AuditEntry]:
    async with database.reader() as session:
        return list((await session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars())


async def bearer_headers(
    database: Database, *, roles: list[str], email: str, locale: str = "en"
) -> dict[str, Any]:
    """A user with `roles` (and `locale`) and an API token, as the Authorization header."""
    from allot.contexts import identity

    async with database.transaction() as session:
        user = await identity.create_user(
            session, email=email, password="S3cure-pass!", roles=roles, locale=locale
        )
        user_id = getattr(user, "id", user)
        _, plaintext = await identity.issue_token(session, user_id=user_id, name="t")
    return {"Authorization": f"Bearer {plaintext}"}
