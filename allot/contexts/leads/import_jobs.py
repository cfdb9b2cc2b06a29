"""The `leads_imports` rows: one per CSV import, with its progress and rejected lines.

Progress is written in the transaction of each batch (`record_batch`), so the counts never run
ahead of (or behind) what was committed. The stored rejected lines are capped at
`MAX_STORED_REJECTS`; `rejected_rows` counts every rejected line.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel.clock import utcnow
from allot.kernel.context import current_actor
from allot.kernel.i18n import N_
from allot.kernel.ids import new_id

from .models import LeadImport

IMPORTS: Table = LeadImport.__table__  # type: ignore[assignment]

MAX_STORED_REJECTS = 10_000
MAX_FILE_NAME = 255
# A running import whose row has not moved for this long lost its process (a restart).
STALE_AFTER = timedelta(minutes=5)
INTERRUPTED = N_("Interrupted: the process running the import stopped")


@dataclass(frozen=True, slots=True)
class ImportJob:
    """An import as its page and the API show it."""

    id: uuid.UUID
    file_name: str
    source: str
    status: str  # running | done | failed
    total_rows: int | None
    processed_rows: int
    imported_rows: int
    rejected_rows: int
    rejects: list[dict[str, Any]]
    error: str | None
    created_by: uuid.UUID | None
    created_by_label: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def rejects_truncated(self) -> bool:
        """More lines were rejected than the stored list shows (it is capped)."""
        return len({r.get("line") for r in self.rejects}) < self.rejected_rows

    @property
    def percent(self) -> int:
        if self.status == "done":
            return 100
        if not self.total_rows:
            return 0
        return min(99, int(self.processed_rows * 100 / self.total_rows))


async def create(
    session: AsyncSession, *, file_name: str, source: str, total_rows: int | None = None
) -> uuid.UUID:
    actor = current_actor()
    now = utcnow()
    job_id = new_id()
    await session.execute(
        insert(IMPORTS).values(
            id=job_id,
            file_name=file_name[:MAX_FILE_NAME],
            source=source,
            status="running",
            total_rows=total_rows,
            processed_rows=0,
            imported_rows=0,
            rejected_rows=0,
            rejects=[],
            error=None,
            created_by=actor.id if actor.kind in ("user", "token") else None,
            created_by_label=actor.label[:255],
            created_at=now,
            updated_at=now,
            finished_at=None,
        )
    )
    return job_id


async def record_batch(
    session: AsyncSession,
    job_id: uuid.UUID,
    *,
    processed: int,
    imported: int,
    rejected_rows: int,
    rejects: Sequence[dict[str, Any]] | None,
    total_rows: int | None = None,
) -> None:
    """Add one batch's counts; `rejects` is the whole stored list when it changed (else None)."""
    values: dict[str, Any] = {
        "processed_rows": IMPORTS.c.processed_rows + processed,
        "imported_rows": IMPORTS.c.imported_rows + imported,
        "rejected_rows": IMPORTS.c.rejected_rows + rejected_rows,
        "updated_at": utcnow(),
    }
    if rejects is not None:
        values["rejects"] = list(rejects)
    if total_rows is not None:
        values["total_rows"] = total_rows
    await session.execute(update(IMPORTS).where(IMPORTS.c.id == job_id).values(**values))


async def finish(
    session: AsyncSession,
    job_id: uuid.UUID,
    *,
    status: str,
    total_rows: int | None = None,
    error: str | None = None,
) -> None:
    now = utcnow()
    values: dict[str, Any] = {"status": status, "error": error, "updated_at": now,
                              "finished_at": now}  # fmt: skip
    if total_rows is not None:
        values["total_rows"] = total_rows
    await session.execute(update(IMPORTS).where(IMPORTS.c.id == job_id).values(**values))


def _job(row: Any, now: datetime) -> ImportJob:
    status, error = row.status, row.error
    if status == "running" and row.updated_at < now - STALE_AFTER:
        status, error = "failed", INTERRUPTED
    return ImportJob(
        id=row.id,
        file_name=row.file_name,
        source=row.source,
        status=status,
        total_rows=row.total_rows,
        processed_rows=row.processed_rows,
        imported_rows=row.imported_rows,
        rejected_rows=row.rejected_rows,
        rejects=list(row.rejects or []),
        error=error,
        created_by=row.created_by,
        created_by_label=row.created_by_label,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )


async def get(session: AsyncSession, job_id: uuid.UUID) -> ImportJob | None:
    row = (await session.execute(select(IMPORTS).where(IMPORTS.c.id == job_id))).first()
    return _job(row, utcnow()) if row is not None else None


async def recent(
    session: AsyncSession, *, created_by: uuid.UUID | None = None, limit: int = 10
) -> list[ImportJob]:
    """The latest imports (of one user, when given), newest first, without their reject lists."""
    columns = [c for c in IMPORTS.c if c.name != "rejects"]
    statement = select(*columns).order_by(IMPORTS.c.id.desc()).limit(limit)
    if created_by is not None:
        statement = statement.where(IMPORTS.c.created_by == created_by)
    now = utcnow()
    rows = (await session.execute(statement)).all()
    return [_job(_WithoutRejects(row), now) for row in rows]


class _WithoutRejects:
    def __init__(self, row: Any) -> None:
        self._row = row

    def __getattr__(self, name: str) -> Any:
        return None if name == "rejects" else getattr(self._row, name)
