"""The CSV import pages: `/leads/import` (upload form and recent imports) and
`/leads/import/<id>` (live progress and the rejected lines; htmx polls the progress block every
second while the import runs).

The upload is saved to the data directory and imported by a background task of this process,
batch by batch, each batch in its own transaction, so the page answers at once. Who may import:
`leads:create`; an import's page shows to whoever started it and to managers
(`leads:configure`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.responses import RedirectResponse, Response

from allot.kernel.auth import Principal, require
from allot.kernel.context import bound
from allot.kernel.db.engine import Database
from allot.kernel.errors import NotFound
from allot.kernel.i18n import gettext as _
from allot.kernel.logging import get_logger
from allot.kernel.web.routers import view_router
from allot.kernel.web.templating import render
from allot.kernel.web.uow import ReadSession

from . import csv_import, import_jobs
from .import_jobs import ImportJob
from .models import SOURCE_PATTERN
from .permissions import LEADS_CONFIGURE, LEADS_CREATE

router = view_router()
log = get_logger(__name__)

UPLOAD_DIR = "imports"
WEB_BATCH_SIZE = 1000  # smaller than the CLI's: the server answers requests between batches
COPY_CHUNK = 1 << 20
# Imports running in this process (a task must be referenced, or it may be collected).
_running: dict[uuid.UUID, asyncio.Task[Any]] = {}


def upload_path(request: Request, import_id: uuid.UUID) -> Path:
    directory = Path(request.app.state.settings.data_dir) / UPLOAD_DIR
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{import_id}.csv"


async def save_upload(upload: UploadFile, path: Path) -> int:
    size = 0
    with path.open("wb") as out:
        while chunk := await upload.read(COPY_CHUNK):
            out.write(chunk)
            size += len(chunk)
    return size


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def launch(
    database: Database,
    import_id: uuid.UUID,
    path: Path,
    principal: Principal,
    *,
    file_name: str,
    source: str,
    batch_size: int = WEB_BATCH_SIZE,
) -> None:
    """Run the import in the background, as the principal; the file is removed when done."""

    async def work() -> None:
        try:
            with bound(actor=principal.actor):
                await csv_import.run_import(
                    database,
                    import_id,
                    path,
                    file_name=file_name,
                    source=source,
                    batch_size=batch_size,
                )
        except Exception:
            log.exception("lead import failed", import_id=str(import_id))
        finally:
            _running.pop(import_id, None)
            _remove(path)

    _running[import_id] = asyncio.get_running_loop().create_task(work())


async def wait_for(import_id: uuid.UUID) -> None:
    """Wait for an import of this process to end (tests; a shutdown)."""
    task = _running.get(import_id)
    if task is not None:
        await asyncio.wait({task})


def visible(job: ImportJob | None, principal: Principal) -> ImportJob:
    if job is None or not (principal.has(LEADS_CONFIGURE) or job.created_by == principal.user_id):
        raise NotFound(detail="No such import")
    return job


def max_upload_bytes(request: Request) -> int:
    return int(request.app.state.settings.max_upload_bytes)


def check_source(source: str) -> str | None:
    """The cleaned default source, or None when it is not a valid source name."""
    cleaned = source.strip().lower() or csv_import.DEFAULT_SOURCE
    return cleaned if SOURCE_PATTERN.match(cleaned) else None


# -- pages ------------------------------------------------------------------------------------
async def _form(
    request: Request,
    session: Any,
    principal: Principal,
    *,
    errors: dict[str, str],
    source: str = csv_import.DEFAULT_SOURCE,
    status_code: int = 200,
) -> Response:
    mine = None if principal.has(LEADS_CONFIGURE) else principal.user_id
    context = {
        "errors": errors,
        "source": source,
        "imports": await import_jobs.recent(session, created_by=mine),
        "max_megabytes": max(1, max_upload_bytes(request) // 1_000_000),
    }
    return render(request, "leads/import.html", context, block="content",
                  status_code=status_code)  # fmt: skip


@router.get("/leads/import")
async def import_page(
    request: Request, session: ReadSession, principal: Principal = require(LEADS_CREATE)
) -> Response:
    return await _form(request, session, principal, errors={})


@router.post("/leads/import")
async def upload(
    request: Request, session: ReadSession, principal: Principal = require(LEADS_CREATE)
) -> Response:
    form = await request.form()
    upload = form.get("file")
    raw_source = form.get("source")
    source_text = raw_source if isinstance(raw_source, str) else ""
    errors: dict[str, str] = {}
    source = check_source(source_text)
    if source is None:
        errors["source"] = _("Lower-case letters, digits and _ . : - only, up to 64 characters")
    if not isinstance(upload, UploadFile) or not upload.filename:
        errors["file"] = _("Choose a CSV file")
    if errors or not isinstance(upload, UploadFile) or source is None:
        return await _form(request, session, principal, errors=errors, source=source_text,
                           status_code=422)  # fmt: skip
    database: Database = request.app.state.database
    file_name = Path(upload.filename or "leads.csv").name
    with bound(actor=principal.actor):
        import_id = await csv_import.start_import(database, file_name=file_name, source=source)
    path = upload_path(request, import_id)
    await save_upload(upload, path)
    launch(database, import_id, path, principal, file_name=file_name, source=source)
    return RedirectResponse(f"/leads/import/{import_id}", status_code=303)


@router.get("/leads/import/{import_id}")
async def import_job_page(
    request: Request,
    import_id: uuid.UUID,
    session: ReadSession,
    principal: Principal = require(LEADS_CREATE),
) -> Response:
    job = visible(await import_jobs.get(session, import_id), principal)
    block = "progress" if request.query_params.get("part") == "progress" else "content"
    return render(request, "leads/import_job.html", {"job": job}, block=block)
