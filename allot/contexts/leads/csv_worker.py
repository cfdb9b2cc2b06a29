"""A CSV file's rows in batches for `csv_import`, read and validated in the importing process
or, for a big file, in a second one while the importing process writes.

Why a second process: reading a row (the CSV reader, phone and amount parsing,
`validate_new_lead`) is pure Python and holds the GIL, so a thread would mostly take turns with
the writing rather than run beside it. A process does run beside it: with two cores, one parses
and validates while the other writes, and reading costs the import no time.

The two meet at a queue of at most WORKER_QUEUE_BATCHES batches: the worker waits when it is
that far ahead, so memory stays bounded whatever the file's size.

Spawned, not forked: the importing process may hold database connections and threads that a
fork would copy. The price: the worker is a fresh interpreter that imports this module and the
leads context before it sends its first batch, which pays off only for files of
PARSE_IN_WORKER_BYTES and more; and all that crosses must pickle: the arguments, the batches
(as tuples, `_WireBatch`) and the error the worker raised (or else its message). Where no
process can be started, the file is read in the importing process.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import gc
import multiprocessing
import pickle
import queue
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from allot.kernel.logging import get_logger

from .intake import NewLead

if TYPE_CHECKING:  # csv_import imports this module: its types only, for the checker
    from .csv_import import Columns, FileShape, Reject

log = get_logger(__name__)

# A few MB is some 20,000 rows: below that, starting the process costs more than it saves.
PARSE_IN_WORKER_BYTES = 4 << 20
WORKER_QUEUE_BATCHES = 4


@dataclass(slots=True)
class Batch:
    valid: list[tuple[int, NewLead]] = field(default_factory=list)  # (line, lead)
    rejects: list[Reject] = field(default_factory=list)  # found before the database
    rejected_lines: int = 0
    rows: int = 0


def records(path: Path, shape: FileShape) -> Iterator[tuple[int, list[str]]]:
    """(first physical line, cells) of every non-blank record after the header."""
    with path.open(encoding=shape.encoding, newline="") as text:
        reader = csv.reader(text, delimiter=shape.delimiter)
        previous_end = 0
        for cells in reader:
            start, previous_end = previous_end + 1, reader.line_num
            if cells and any(c.strip() for c in cells):
                yield start, cells


def _parsed(
    path: Path, shape: FileShape, columns: Columns, source: str, batch_size: int
) -> Iterator[Batch]:
    """The file's rows after the header, parsed and validated, `batch_size` rows a batch."""
    from .csv_import import parse_row  # not at the top: csv_import imports this module

    rows = records(path, shape)
    next(rows, None)  # the header
    batch = Batch()
    for line, cells in rows:
        parsed = parse_row(cells, line, columns, source)
        batch.rows += 1
        if isinstance(parsed, list):
            batch.rejects += parsed
            batch.rejected_lines += 1
        else:
            batch.valid.append((line, parsed))
        if batch.rows >= batch_size:
            yield batch
            batch = Batch()
    if batch.rows:
        yield batch


async def batches(
    path: Path,
    shape: FileShape,
    columns: Columns,
    source: str,
    batch_size: int,
    parse_in_worker: bool | None,
) -> AsyncIterator[Batch]:
    """`_parsed`, from a second process if `parse_in_worker` (None: if the file is big)."""
    if parse_in_worker is None:
        parse_in_worker = shape.size >= PARSE_IN_WORKER_BYTES
    worker = None
    if parse_in_worker:
        try:
            worker = _ParsingWorker((path, shape, columns, source, batch_size))
        except OSError:  # no process or semaphore to be had here: read it in this one
            log.warning("import reads its file in the importing process", exc_info=True)
    if worker is None:
        for batch in _parsed(path, shape, columns, source, batch_size):
            yield batch
        return
    try:
        while (wire := await worker.next_batch()) is not None:
            yield _from_wire(wire)
    finally:
        worker.stop()


# A batch as the worker sends it: lists of tuples pickle several times faster than dataclasses.
_WireBatch = tuple[list[tuple[Any, ...]], list["Reject"], int, int]


def _to_wire(batch: Batch) -> _WireBatch:
    valid = [
        (line, *(getattr(new, name) for name in _NEW_LEAD_FIELDS)) for line, new in batch.valid
    ]
    return valid, batch.rejects, batch.rejected_lines, batch.rows


def _from_wire(wire: _WireBatch) -> Batch:
    valid, rejects, rejected_lines, rows = wire
    return Batch([(row[0], NewLead(*row[1:])) for row in valid], rejects, rejected_lines, rows)


_NEW_LEAD_FIELDS = tuple(f.name for f in dataclasses.fields(NewLead))


def _parse_in_worker(
    path: Path, shape: FileShape, columns: Columns, source: str, batch_size: int
) -> Iterator[_WireBatch]:
    """What the worker process sends (see `_ParsingWorker`)."""
    for batch in _parsed(path, shape, columns, source, batch_size):
        yield _to_wire(batch)


def _worker_main(channel: Any, args: tuple[Any, ...]) -> None:
    """The worker process: every batch of the file into `channel`, then None, or the error."""
    # Full collections made rarer as in the importing process: see _rare_full_collections there.
    gc.set_threshold(*(t * 10 for t in gc.get_threshold()))
    try:
        for wire in _parse_in_worker(*args):
            channel.put(wire)
        channel.put(None)
    except BaseException as exc:
        error = exc
        try:
            pickle.dumps(error)
        except Exception:  # it cannot cross to the importer: its words then
            error = RuntimeError(f"{type(exc).__name__}: {exc}")
        channel.put(_Failed(error))


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


class _ParsingWorker:
    """The second process and the queue it fills (see the module's docstring)."""

    def __init__(self, args: tuple[Any, ...]) -> None:
        context = multiprocessing.get_context("spawn")
        self.queue = context.Queue(maxsize=WORKER_QUEUE_BATCHES)
        self.process = context.Process(
            target=_worker_main, args=(self.queue, args), name="allot-csv-import", daemon=True
        )
        self.process.start()

    async def next_batch(self) -> _WireBatch | None:
        """The next batch, None after the last; raises what the worker raised."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                item = await loop.run_in_executor(None, self._get)
            except queue.Empty:
                if not self.process.is_alive():
                    raise RuntimeError("the process reading the file stopped") from None
                continue
            if isinstance(item, _Failed):
                raise item.error
            return cast(_WireBatch | None, item)

    def _get(self) -> Any:
        return self.queue.get(timeout=1.0)

    def stop(self) -> None:
        if self.process.is_alive():  # we stopped early (an error): it may wait on a full queue
            self.process.terminate()
        self.process.join(timeout=10)
        self.queue.close()
        self.queue.cancel_join_thread()
