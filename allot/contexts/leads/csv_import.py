"""CSV import of leads: the one code path behind `allot leads import`, the /leads/import page and
`POST /api/v1/lead-imports`.

Files as Russian ops teams have them: saved from Excel with `;` (or `,`, or tabs), in UTF-8
with or without a BOM, Windows-1251 or UTF-16; headers in English or Russian ("ФИО",
"Телефон", "Сумма, руб."); phones in any common notation; amounts in roubles ("150 000",
"150000,50"). Columns that are not lead fields become the lead's custom attributes.

Every row is either imported whole (customer, lead, routing item, timeline, events) or rejected
with its line number (the physical line of the file, the header being line 1), the field at
fault and the reason. Rows are validated first (`validate_new_lead`), then written in batches,
one transaction each, through `bulk_intake.create_leads_bulk`; the import's progress and
rejected lines are updated in the same transaction. A batch the database refuses is rolled back
whole and split in halves until the refused row is found: it is rejected, the others imported.
A big file is read and validated in a second process while this one writes, so reading costs
the import no time when a second core is free (`csv_worker`).
"""

from __future__ import annotations

import codecs
import csv
import gc
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError, IntegrityError

from allot.contexts import customers
from allot.kernel.db.engine import Database, backoff_before_retry, is_retryable
from allot.kernel.errors import ValidationFailed
from allot.kernel.i18n import N_
from allot.kernel.logging import get_logger

from . import import_jobs
from .bulk_intake import StatisticsKeeper, create_leads_bulk
from .csv_worker import Batch, batches, records
from .import_jobs import MAX_STORED_REJECTS
from .intake import MAX_ATTRIBUTE_KEY, NewLead, validate_new_lead

log = get_logger(__name__)

DEFAULT_SOURCE = "import"
DEFAULT_BATCH_SIZE = 2000
MAX_BATCH_SIZE = 20_000
ATTEMPTS_PER_BATCH = 3  # a concurrent writer took a key meanwhile, a deadlock: run it again

# Reasons (English msgids: the web page shows them translated).
BAD_AMOUNT = N_("Enter an amount in roubles, e.g. 150000 or 150000,50")
BAD_WHOLE_NUMBER = N_("Enter a whole number")
NUL_CHARACTER = N_("Contains a NUL character")
EXTRA_CELLS = N_("More cells than the header has columns")
REFUSED = "The database refused this row: {error}"
# Why a whole file cannot be read.
EMPTY_FILE = N_("The file is empty")
EXCEL_FILE = N_("This is an Excel workbook, not CSV: save it as CSV (UTF-8) first")
UNKNOWN_ENCODING = N_("Cannot read the file's text: save it as CSV in UTF-8 or Windows-1251")
NO_NAME_COLUMN = N_("No name column (name, ФИО, имя): every lead needs the customer's name")
NOT_CSV = "Not a CSV file: {error}"


class UnreadableFile(Exception):
    """The file cannot be imported at all (encoding, not CSV, no header)."""


# -- reading the file -------------------------------------------------------------------------
CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class FileShape:
    encoding: str
    delimiter: str
    lines: int  # physical lines, for the progress estimate
    size: int = 0  # bytes


def _decodes(path: Path, encoding: str) -> int | None:
    """Line count if the whole file decodes strictly as `encoding`, else None."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    lines = 0
    last = b""
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                return None
            lines += chunk.count(b"\n")
            last = chunk
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return None
    return lines + (1 if last and not last.endswith(b"\n") else 0)


def _delimiter(header: str) -> str:
    """The separator the header line uses most (outside quotes); a one-column file gets ','."""
    outside = re.sub(r'"[^"]*"', "", header)
    counts = {d: outside.count(d) for d in (";", ",", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def inspect(path: Path) -> FileShape:
    """Encoding, delimiter and line count of a CSV file; UnreadableFile if it is none."""
    with path.open("rb") as stream:
        head = stream.read(4096)
    if not head.strip():
        raise UnreadableFile(EMPTY_FILE)
    if head.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
        raise UnreadableFile(EXCEL_FILE)
    if head.startswith(codecs.BOM_UTF8):
        candidates = ["utf-8-sig"]
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        candidates = ["utf-16"]
    elif head.count(b"\x00") > len(head) // 4:  # UTF-16 without a BOM, or not text at all
        raise UnreadableFile(UNKNOWN_ENCODING)
    else:
        candidates = ["utf-8", "cp1251"]
    for encoding in candidates:
        lines = _decodes(path, encoding)
        if lines is not None:
            with path.open(encoding=encoding, newline="") as text:
                header = text.readline()
            return FileShape(encoding, _delimiter(header), lines, path.stat().st_size)
    raise UnreadableFile(UNKNOWN_ENCODING)


# -- the header -------------------------------------------------------------------------------
ALIASES: dict[str, tuple[str, ...]] = {
    "source": ("source", "источник", "канал", "leadsource"),
    "external_id": ("externalid", "extid", "id", "внешнийid", "внешнийидентификатор",
                    "idзаявки", "номерзаявки", "заявка"),
    "name": ("name", "customername", "customer", "fullname", "fio", "фио", "имя", "клиент",
             "имяклиента", "фамилияимяотчество"),
    "phone": ("phone", "customerphone", "tel", "telephone", "mobile", "phonenumber", "телефон",
              "тел", "мобильный", "номертелефона", "мобтелефон", "мобильныйтелефон"),
    "email": ("email", "mail", "customeremail", "почта", "элпочта", "электроннаяпочта",
              "емейл", "имейл"),
    "amount": ("amount", "sum", "loanamount", "сумма", "суммазайма", "суммакредита"),
    "amount_minor": ("amountminor", "суммавкопейках"),
    "currency": ("currency", "валюта"),
    "term": ("term", "termmonths", "months", "срок", "срокзайма", "срокмес"),
    "priority": ("priority", "приоритет"),
}  # fmt: skip
_FIELD_OF = {alias: name for name, aliases in ALIASES.items() for alias in aliases}
# Field paths of validate_new_lead(prefix="row") -> our field names.
_VALIDATION_FIELDS = {
    "row.source": "source",
    "row.external_id": "external_id",
    "row.customer.name": "name",
    "row.customer.phone": "phone",
    "row.customer.email": "email",
    "row.priority": "priority",
    "row.product.amount_minor": "amount",
    "row.product.currency": "currency",
    "row.product.term_months": "term",
    "row.attributes": "attributes",
}


def header_key(text: str) -> str:
    """ "Сумма, руб." -> "сумма"; "Срок (мес.)" -> "срок"; "E-mail" -> "email"."""
    text = re.sub(r"\(.*?\)", "", text.replace("\ufeff", "")).split(",")[0]
    return "".join(ch for ch in text.lower().replace("ё", "е") if ch.isalnum())


@dataclass(slots=True)
class Columns:
    """Which cell holds which lead field; the other cells are custom attributes."""

    fields: dict[str, int] = field(default_factory=dict)  # our field name -> cell index
    labels: dict[str, str] = field(default_factory=dict)  # our field name -> header text
    attributes: list[tuple[int, str]] = field(default_factory=list)  # cell index, key
    width: int = 0

    @classmethod
    def of(cls, header: list[str]) -> Columns:
        columns = cls(width=len(header))
        keys: set[str] = set()
        for index, text in enumerate(header):
            label = text.replace("\ufeff", "").strip()
            name = _FIELD_OF.get(header_key(label))
            if name is not None and name not in columns.fields:
                columns.fields[name] = index
                columns.labels[name] = label
                continue
            key = (label or f"column_{index + 1}")[:MAX_ATTRIBUTE_KEY]
            while key in keys:  # two columns of one name: keep both
                key = f"{key[: MAX_ATTRIBUTE_KEY - 3]}_{index + 1}"
            keys.add(key)
            columns.attributes.append((index, key))
        if "name" not in columns.fields:
            raise UnreadableFile(NO_NAME_COLUMN)
        return columns

    def label(self, name: str) -> str:
        return self.labels.get(name, name)


# -- one row ----------------------------------------------------------------------------------
_SPACES = re.compile(r"[\s\u00a0\u202f']+")
_CURRENCY_MARKS = re.compile(r"(?:₽|руб\.?|р\.|rub)$", re.IGNORECASE)
_AMOUNT = re.compile(r"([0-9]+)(?:[.,]([0-9]{1,2}))?")
_WHOLE = re.compile(r"[+-]?[0-9]+")
_TERM = re.compile(r"([0-9]+)\s*(?:мес\.?|месяц(?:а|ев)?|m|mo|months?)?", re.IGNORECASE)


def parse_amount(text: str) -> int:
    """Roubles as typed ("150 000", "150000,50", "150 000.5 ₽") -> kopecks; ValueError if not.
    A comma or a dot is the decimal separator, never a thousands one: "150,000" is refused
    rather than read as 150 roubles or 150 000."""
    compact = _CURRENCY_MARKS.sub("", _SPACES.sub("", text))
    match = _AMOUNT.fullmatch(compact)
    if match is None:
        raise ValueError(text)
    whole, fraction = match.groups()
    return int(whole) * 100 + int((fraction or "0").ljust(2, "0"))


def _whole(text: str) -> int:
    if not _WHOLE.fullmatch(text):
        raise ValueError(text)
    return int(text)


def _term(text: str) -> int:
    match = _TERM.fullmatch(text)
    if match is None:
        raise ValueError(text)
    return int(match.group(1))


@dataclass(frozen=True, slots=True)
class Reject:
    line: int
    field: str
    reason: str
    code: str = "invalid"
    lead_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"line": self.line, "field": self.field, "reason": self.reason,
                               "code": self.code}  # fmt: skip
        if self.lead_id is not None:
            row["lead_id"] = self.lead_id
        return row


def parse_row(
    cells: list[str], line: int, columns: Columns, default_source: str
) -> NewLead | list[Reject]:
    """A validated lead, or the reasons the row is rejected (every field at fault)."""
    problems: list[Reject] = []
    for index, text in enumerate(cells):
        if "\x00" in text:  # PostgreSQL stores no NUL in text; refuse it on both databases
            label = _label_of(index, columns)
            problems.append(Reject(line, label, NUL_CHARACTER))
    if len(cells) > columns.width and any(c.strip() for c in cells[columns.width :]):
        problems.append(Reject(line, "", EXTRA_CELLS))
    if problems:
        return problems

    def cell(name: str) -> str:
        index = columns.fields.get(name)
        return cells[index].strip() if index is not None and index < len(cells) else ""

    numbers: dict[str, int | None] = {"amount": None, "term": None, "priority": None}
    parsers: dict[str, tuple[Callable[[str], int], str]] = {
        "amount": (parse_amount, BAD_AMOUNT),
        "term": (_term, BAD_WHOLE_NUMBER),
        "priority": (_whole, BAD_WHOLE_NUMBER),
    }
    for name, (parse, message) in parsers.items():
        text = cell(name)
        if text:
            try:
                numbers[name] = parse(text)
            except ValueError:
                problems.append(Reject(line, columns.label(name), message))
    if numbers["amount"] is None and cell("amount_minor"):
        try:
            numbers["amount"] = _whole(cell("amount_minor"))
        except ValueError:
            problems.append(Reject(line, columns.label("amount_minor"), BAD_WHOLE_NUMBER))
    attributes = {
        key: cells[index].strip()
        for index, key in columns.attributes
        if index < len(cells) and cells[index].strip()
    }
    new = NewLead(
        source=cell("source") or default_source,
        customer_name=cell("name") or None,
        customer_phone=cell("phone") or None,
        customer_email=cell("email") or None,
        external_id=cell("external_id") or None,
        attributes=attributes,
        priority=numbers["priority"] or 0,
        amount_minor=numbers["amount"],
        currency=cell("currency") or "RUB",
        term_months=numbers["term"],
    )
    try:
        checked = validate_new_lead(new, prefix="row")
    except ValidationFailed as exc:
        failed = {p.field for p in problems}
        for error in exc.errors:
            label = columns.label(_VALIDATION_FIELDS.get(error.field, error.field))
            if label not in failed:
                problems.append(Reject(line, label, error.message, error.code))
        return problems
    return problems or checked


def _label_of(index: int, columns: Columns) -> str:
    for name, position in columns.fields.items():
        if position == index:
            return columns.label(name)
    for position, key in columns.attributes:
        if position == index:
            return key
    return f"column_{index + 1}"


# -- running an import ------------------------------------------------------------------------
@dataclass(slots=True)
class Progress:
    processed: int = 0
    imported: int = 0
    rejected: int = 0  # rows (lines)
    total: int | None = None  # an estimate (physical lines) until the end


@dataclass(slots=True)
class ImportReport:
    import_id: uuid.UUID | None
    status: str  # done | failed
    total: int = 0
    imported: int = 0
    rejected: int = 0  # rows
    rejects: list[dict[str, Any]] = field(default_factory=list)  # capped, as stored
    rejects_truncated: bool = False
    error: str | None = None


class _Runner:
    def __init__(
        self,
        database: Database,
        import_id: uuid.UUID,
        file_name: str,
        on_progress: Callable[[Progress], None] | None,
    ) -> None:
        self.database = database
        self.import_id = import_id
        self.file_name = file_name
        self.on_progress = on_progress
        self.progress = Progress()
        self.statistics = StatisticsKeeper(database)
        self.stored: list[dict[str, Any]] = []
        self.external_id_label = "external_id"

    def _stored_with(self, rejects: list[Reject]) -> list[dict[str, Any]] | None:
        room = MAX_STORED_REJECTS - len(self.stored)
        if not rejects or room <= 0:
            return None
        return self.stored + [r.as_dict() for r in rejects[:room]]

    async def commit(self, batch: Batch) -> None:
        """Write a batch: all of it in one transaction, or, if the database refuses it, halves
        until the refused rows are found (each such row is rejected, the rest imported)."""
        error: DBAPIError | None = None
        for attempt in range(1, ATTEMPTS_PER_BATCH + 1):
            try:
                await self._write(batch)
                return
            except (IntegrityError, customers.ConcurrentChange) as exc:
                error = exc if isinstance(exc, DBAPIError) else None
            except DBAPIError as exc:
                if not is_retryable(exc):
                    error = exc
                    break
                error = exc
            await backoff_before_retry(attempt)
        if len(batch.valid) <= 1:
            line = batch.valid[0][0] if batch.valid else 0
            message = str(error.orig if error is not None else "concurrent change").splitlines()
            refused = Reject(line, "", REFUSED.format(error=message[0][:200]), "refused")
            log.warning("import row refused", import_id=str(self.import_id), line=line)
            await self._write(
                Batch(
                    rejects=[*batch.rejects, refused] if batch.valid else batch.rejects,
                    rejected_lines=batch.rejected_lines + len(batch.valid),
                    rows=batch.rows,
                )
            )
            return
        half = len(batch.valid) // 2
        first = Batch(batch.valid[:half], batch.rejects, batch.rejected_lines, 0)
        second = Batch(batch.valid[half:], [], 0, 0)
        first.rows = batch.rows - len(second.valid)
        second.rows = len(second.valid)
        await self.commit(first)
        await self.commit(second)

    async def _write(self, batch: Batch) -> None:
        rejects = list(batch.rejects)
        async with self.database.transaction() as session:
            lines = [line for line, _ in batch.valid]
            imported = 0
            if batch.valid:
                result = await create_leads_bulk(
                    session,
                    [new for _, new in batch.valid],
                    import_id=self.import_id,
                    audit_facts={
                        "import_id": str(self.import_id),
                        "file_name": self.file_name,
                        "first_line": min(lines),
                        "last_line": max(lines),
                    },
                )
                imported = result.imported
                rejects += [
                    Reject(
                        lines[r.index],
                        self.external_id_label,
                        r.reason,
                        r.code,
                        str(r.existing_id) if r.existing_id else None,
                    )
                    for r in result.rejected
                ]
                rejects.sort(key=lambda r: r.line)
            rejected_lines = batch.rejected_lines + (len(batch.valid) - imported)
            stored = self._stored_with(rejects)
            await import_jobs.record_batch(
                session,
                self.import_id,
                processed=batch.rows,
                imported=imported,
                rejected_rows=rejected_lines,
                rejects=stored,
                total_rows=self.progress.total,
            )
        if stored is not None:
            self.stored = stored
        self.progress.processed += batch.rows
        self.progress.imported += imported
        self.progress.rejected += rejected_lines
        if self.on_progress is not None:
            self.on_progress(self.progress)


async def start_import(
    database: Database, *, file_name: str, source: str = DEFAULT_SOURCE
) -> uuid.UUID:
    """The import's row (status running), committed, so a page can show it at once."""
    async with database.transaction() as session:
        return await import_jobs.create(session, file_name=file_name, source=source)


async def run_import(
    database: Database,
    import_id: uuid.UUID,
    path: Path,
    *,
    file_name: str | None = None,
    source: str = DEFAULT_SOURCE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: Callable[[Progress], None] | None = None,
    parse_in_worker: bool | None = None,
) -> ImportReport:
    """Import the file into the import `import_id` (see `start_import`), batch by batch, as the
    current actor. An unreadable file ends the import as failed (report.error says why); any
    other error too, after which it is raised again. `parse_in_worker`: read and validate the
    rows in a second process (None: for files of csv_worker.PARSE_IN_WORKER_BYTES and more)."""
    batch_size = max(1, min(batch_size, MAX_BATCH_SIZE))
    runner = _Runner(database, import_id, file_name or path.name, on_progress)
    try:
        with _rare_full_collections():
            await _run(runner, path, source, batch_size, parse_in_worker)
    except (UnreadableFile, csv.Error, UnicodeDecodeError) as exc:
        if isinstance(exc, UnreadableFile):
            error = str(exc)
        else:
            error = NOT_CSV.format(error=str(exc)[:200])
        await _finish(database, import_id, "failed", runner.progress.processed, error)
        return _report(runner, "failed", error)
    except BaseException as exc:
        await _finish(database, import_id, "failed", None, f"{type(exc).__name__}: {exc}"[:500])
        raise
    await _finish(database, import_id, "done", runner.progress.processed, None)
    return _report(runner, "done", None)


async def _run(
    runner: _Runner, path: Path, source: str, batch_size: int, parse_in_worker: bool | None
) -> None:
    shape = inspect(path)
    header = next(records(path, shape), None)
    if header is None:
        raise UnreadableFile(EMPTY_FILE)
    columns = Columns.of(header[1])
    runner.external_id_label = columns.label("external_id")
    runner.progress.total = max(shape.lines - 1, 0)
    async for batch in batches(path, shape, columns, source, batch_size, parse_in_worker):
        await runner.commit(batch)
        await runner.statistics.wrote(len(batch.valid))


# Imports running in this process; while there are any, full collections are rare (see below).
_importing = 0
_thresholds = gc.get_threshold()


@contextmanager
def _rare_full_collections() -> Iterator[None]:
    """A batch keeps ~100,000 objects alive (rows, ids, events) and the interpreter's full
    collection runs whenever the long-lived objects grew by a quarter: it rescanned the whole
    heap every batch or two, a quarter of the import's CPU time as measured, to find nothing
    (rows hold no cycles). While an import runs, the oldest generation is collected 100 times
    less often, the young ones as usual. The thresholds are the process's, restored when the
    last import ends."""
    global _importing, _thresholds
    if _importing == 0:
        _thresholds = gc.get_threshold()
        young, middle, oldest = _thresholds
        gc.set_threshold(young, middle, oldest * 100)
    _importing += 1
    try:
        yield
    finally:
        _importing -= 1
        if _importing == 0:
            gc.set_threshold(*_thresholds)


async def _finish(
    database: Database, import_id: uuid.UUID, status: str, total: int | None, error: str | None
) -> None:
    try:
        async with database.transaction() as session:
            await import_jobs.finish(session, import_id, status=status, total_rows=total,
                                     error=error)  # fmt: skip
    except Exception:  # the database is gone: the row goes stale and reads as interrupted
        log.exception("could not record the end of an import", import_id=str(import_id))


def _report(runner: _Runner, status: str, error: str | None) -> ImportReport:
    progress = runner.progress
    lines = {r["line"] for r in runner.stored}
    return ImportReport(
        import_id=runner.import_id,
        status=status,
        total=progress.processed,
        imported=progress.imported,
        rejected=progress.rejected,
        rejects=runner.stored,
        rejects_truncated=len(lines) < progress.rejected,
        error=error,
    )


async def import_file(
    database: Database,
    path: Path,
    *,
    file_name: str | None = None,
    source: str = DEFAULT_SOURCE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: Callable[[Progress], None] | None = None,
    parse_in_worker: bool | None = None,
) -> ImportReport:
    """`start_import` + `run_import`: what the CLI and the benchmark run."""
    name = file_name or path.name
    import_id = await start_import(database, file_name=name, source=source)
    return await run_import(
        database,
        import_id,
        path,
        file_name=name,
        source=source,
        batch_size=batch_size,
        on_progress=on_progress,
        parse_in_worker=parse_in_worker,
    )
