"""JSON API of CSV imports: `POST /api/v1/lead-imports` (multipart `file`, optional `source`)
answers 202 with the import's id at once and imports in the background; `GET
/api/v1/lead-imports/{id}` reports its progress and the rejected lines."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import File, Form, Request, UploadFile
from pydantic import BaseModel, Field

from allot.kernel.auth import Principal, require
from allot.kernel.context import bound
from allot.kernel.db.engine import Database
from allot.kernel.errors import ValidationFailed
from allot.kernel.web.routers import api_router
from allot.kernel.web.uow import ReadSession

from . import csv_import, import_jobs
from .import_jobs import MAX_STORED_REJECTS, ImportJob
from .import_views import check_source, launch, save_upload, upload_path, visible
from .intake import BAD_SOURCE
from .permissions import LEADS_CREATE

router = api_router("/lead-imports", "lead imports")


class RejectedLine(BaseModel):
    line: int = Field(description="Physical line of the file; the header is line 1")
    field: str = Field(description="The column at fault (its header text), or empty")
    reason: str
    code: str = Field(description="invalid, missing, duplicate, refused, ...")
    lead_id: uuid.UUID | None = Field(default=None, description="For duplicates: the lead")


class LeadImportOut(BaseModel):
    id: uuid.UUID
    file_name: str
    source: str
    status: str = Field(description="running, done or failed")
    total_rows: int | None = Field(description="Rows of the file (an estimate while running)")
    processed_rows: int
    imported_rows: int
    rejected_rows: int
    rejects: list[RejectedLine] = Field(
        description=f"The rejected lines, at most the first {MAX_STORED_REJECTS}"
    )
    rejects_truncated: bool
    error: str | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, job: ImportJob) -> LeadImportOut:
        return cls(
            id=job.id,
            file_name=job.file_name,
            source=job.source,
            status=job.status,
            total_rows=job.total_rows,
            processed_rows=job.processed_rows,
            imported_rows=job.imported_rows,
            rejected_rows=job.rejected_rows,
            rejects=[RejectedLine(**r) for r in job.rejects],
            rejects_truncated=job.rejects_truncated,
            error=job.error,
            created_at=job.created_at,
            finished_at=job.finished_at,
        )


class ImportStarted(BaseModel):
    id: uuid.UUID
    status: str
    url: str = Field(description="Where to follow its progress")


@router.post("", status_code=202, response_model=ImportStarted)
async def start_import(
    request: Request,
    file: Annotated[UploadFile, File(description="CSV: `,` `;` or tab; UTF-8 or cp1251")],
    source: Annotated[str, Form(description="Source of rows without a source column")] = (
        csv_import.DEFAULT_SOURCE
    ),
    principal: Principal = require(LEADS_CREATE),
) -> Any:
    """Start importing leads from a CSV file (see `allot leads import --help` for the columns);
    each row is imported whole or rejected with its line number and reason."""
    cleaned = check_source(source)
    if cleaned is None:
        raise ValidationFailed.on("body.source", BAD_SOURCE)
    database: Database = request.app.state.database
    file_name = Path(file.filename or "leads.csv").name
    with bound(actor=principal.actor):
        import_id = await csv_import.start_import(database, file_name=file_name, source=cleaned)
    path = upload_path(request, import_id)
    await save_upload(file, path)
    launch(database, import_id, path, principal, file_name=file_name, source=cleaned)
    return ImportStarted(id=import_id, status="running", url=f"/api/v1/lead-imports/{import_id}")


@router.get("/{import_id}", response_model=LeadImportOut)
async def get_import(
    import_id: uuid.UUID, session: ReadSession, principal: Principal = require(LEADS_CREATE)
) -> Any:
    """An import's progress, counts and rejected lines."""
    return LeadImportOut.of(visible(await import_jobs.get(session, import_id), principal))
