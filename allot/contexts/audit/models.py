"""The audit trail table: one append-only row per change, written in the change's transaction.

Rows are never updated except by pseudonymisation (personal values and the actor label are
rewritten, `pseudonymised_at` set) and never deleted. Both databases enforce that with triggers
created alongside the table, so even a stray `DELETE` typed into a SQL console fails.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DDL, Index, String, Text, event
from sqlalchemy.orm import Mapped, mapped_column

from allot.kernel.db import Base
from allot.kernel.ids import new_id


class AuditEntry(Base):
    __tablename__ = "audit_entries"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    occurred_at: Mapped[datetime]
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[uuid.UUID | None]
    actor_label: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(100))
    object_type: Mapped[str] = mapped_column(String(100))
    object_id: Mapped[str] = mapped_column(String(255))
    before: Mapped[dict[str, Any] | None]
    after: Mapped[dict[str, Any] | None]
    changed_fields: Mapped[list[Any]]
    personal_fields: Mapped[list[Any]]
    request_id: Mapped[str | None] = mapped_column(String(128))
    correlation_id: Mapped[str | None] = mapped_column(String(128))
    summary: Mapped[str | None] = mapped_column(Text)
    pseudonymised_at: Mapped[datetime | None]

    # Listings are newest-first by id (UUIDv7), so the filter columns lead and id follows.
    __table_args__ = (
        Index("ix_audit_entries_object", "object_type", "object_id", "id"),
        Index("ix_audit_entries_actor", "actor_id", "id"),
        Index("ix_audit_entries_occurred_at", "occurred_at"),
    )


# Columns pseudonymisation may rewrite; every other column is frozen once written.
MUTABLE_COLUMNS = ("before", "after", "actor_label", "summary", "pseudonymised_at")
FROZEN_COLUMNS = tuple(
    c.name for c in AuditEntry.__table__.columns if c.name not in MUTABLE_COLUMNS
)

_APPEND_ONLY_MESSAGE = "audit_entries is append-only"


def _ddl(statement: str) -> DDL:
    return DDL(statement)  # type: ignore[no-untyped-call]  # SQLAlchemy leaves DDL() untyped


_frozen = ", ".join(FROZEN_COLUMNS)

# DDL rather than a migration-only script: `metadata.create_all` (tests, first run) and
# migrations that create the table from this metadata both get the guard.
SQLITE_GUARDS = (
    _ddl(
        "CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries "
        f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY_MESSAGE}'); END"
    ),
    _ddl(
        f"CREATE TRIGGER audit_entries_frozen_columns BEFORE UPDATE OF {_frozen} "
        f"ON audit_entries BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY_MESSAGE}'); END"
    ),
)
POSTGRESQL_GUARDS = (
    _ddl(
        "CREATE OR REPLACE FUNCTION audit_entries_append_only() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN "
        f"RAISE EXCEPTION '{_APPEND_ONLY_MESSAGE}' USING ERRCODE = 'insufficient_privilege'; "
        "END $$"
    ),
    _ddl(
        "CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries "
        "FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only()"
    ),
    _ddl(
        f"CREATE TRIGGER audit_entries_frozen_columns BEFORE UPDATE OF {_frozen} "
        "ON audit_entries FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only()"
    ),
)
# TRUNCATE stays possible on purpose: it needs table ownership, and test isolation relies on it.


def guard_statements(dialect_name: str) -> list[str]:
    """The guard's SQL for a migration (Alembic's `op.create_table` fires no table events):
    `for sql in guard_statements(op.get_bind().dialect.name): op.execute(sql)`."""
    guards = {"sqlite": SQLITE_GUARDS, "postgresql": POSTGRESQL_GUARDS}.get(dialect_name, ())
    return [str(guard.statement) for guard in guards]


for guard in SQLITE_GUARDS:
    event.listen(AuditEntry.__table__, "after_create", guard.execute_if(dialect="sqlite"))
for guard in POSTGRESQL_GUARDS:
    event.listen(AuditEntry.__table__, "after_create", guard.execute_if(dialect="postgresql"))
event.listen(
    AuditEntry.__table__,
    "after_drop",
    _ddl("DROP FUNCTION IF EXISTS audit_entries_append_only()").execute_if(dialect="postgresql"),
)
