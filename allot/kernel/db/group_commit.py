"""Group commit: concurrent callers hand their writes to one unit of work that takes them all.

Why: a unit of work per HTTP request pays a commit, a writer turn (SQLite has one writer) and a
round of per-row statements for every request. When many requests of one kind arrive at once
(leads from an integration), one transaction for all of them is several times cheaper: the
work is done set-based and committed once. Nothing waits for a batch to fill: the first caller
starts a drain, which takes whatever is pending when it gets the writer turn, so an idle system
answers a lone request as fast as before and a busy one batches more. One exception, for
throughput: when a drain has just answered several callers and rows are still pending, it waits
up to `GATHER_SECONDS` for as many more as it answered (the same clients coming back with their
next rows) before taking the next batch. Without it, 8 clients settle into batches of ≈4 that
alternate (those answered, those that arrived meanwhile), and every batch carries a fixed cost
(its statements, its commit, the dispatcher's rounds after it) that halves per row when batches
double. A lone caller, or a drain with nothing pending, never waits.

Guarantees, per caller:
- G1 commit before answer: `submit` returns only after the transaction holding the caller's
  write committed (as the request unit of work does).
- G2 one caller's failure is its own: the batch function returns an exception for a row it
  refuses (a duplicate, say) and the others commit. If the batch as a whole fails (a race
  lost to another process, a bug), nothing of it stays and every row is taken again on its
  own, in its own unit of work, by `run_one` (the single-row path), so each caller gets the
  answer it would have got alone.
- G3 each row keeps its caller's context: actor, request id and correlation id are captured at
  `submit` and re-applied around that row's work (the batch function applies them).
- Rows of different actors are never in one batch (audit entries and events of a batch's
  shared statements carry one actor).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel import context
from allot.kernel.context import ContextSnapshot
from allot.kernel.db.engine import (
    MAX_TRANSACTION_ATTEMPTS,
    Database,
    backoff_before_retry,
    is_retryable,
)
from allot.kernel.logging import get_logger

log = get_logger(__name__)

BATCH_ROWS = Histogram(
    "allot_group_commit_batch_rows",
    "Rows written per group-commit batch",
    ["name"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
FALLBACKS = Counter(
    "allot_group_commit_fallbacks_total",
    "Group-commit batches that failed as a whole and were taken row by row",
    ["name"],
)

# The longest a busy drain waits for the callers it just answered (see above): a few requests'
# worth of the server's own work, well under a batch's time.
GATHER_SECONDS = 0.002

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Row(Generic[T]):
    """One caller's work, with the context to do it in."""

    value: T
    caller: ContextSnapshot


RunBatch = Callable[[AsyncSession, Sequence[Row[T]]], Awaitable[list[R | Exception]]]
RunOne = Callable[[AsyncSession, T], Awaitable[R]]


@dataclass(slots=True)
class _Pending(Generic[T, R]):
    row: Row[T]
    answer: asyncio.Future[R]


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class GroupCommit(Generic[T, R]):
    """Takes rows from concurrent callers and writes them in shared units of work."""

    def __init__(
        self,
        name: str,
        database: Database,
        *,
        run_batch: RunBatch[T, R],
        run_one: RunOne[T, R],
        max_batch: int = 256,
    ) -> None:
        self.name = name
        self.database = database
        self._run_batch = run_batch
        self._run_one = run_one
        self.max_batch = max_batch
        self._pending: list[_Pending[T, R]] = []
        # One drain at a time, on PostgreSQL too: two would plan from the same snapshot (both
        # seeing the same agent as the least loaded, say), and while one batch is under way
        # the next simply grows.
        self._drain: asyncio.Task[None] | None = None
        self._open = asyncio.Event()
        self._open.set()
        self.batches = 0  # counters for tests and /metrics
        self.fallbacks = 0
        # While a drain gathers: set once this many rows are pending.
        self._enough: asyncio.Future[None] | None = None
        self._enough_rows = 0

    async def submit(self, value: T) -> R:
        """The result of `value`'s write, once committed; or the exception refusing it."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[R] = loop.create_future()
        pending = _Pending(Row(value, context.snapshot()), answer)
        self._pending.append(pending)
        enough = self._enough
        if enough is not None and len(self._pending) >= self._enough_rows:
            _settle(enough)
        if self._drain is None or self._drain.done():
            self._drain = loop.create_task(self._drain_pending())
        return await pending.answer

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """No batch starts while held: callers queue up, and all of them are taken in together
        when it ends (tests use it to make a batch of a known size)."""
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()

    def waiting(self) -> int:
        return sum(1 for p in self._pending if not p.answer.done())

    async def _drain_pending(self) -> None:
        answered = 0
        while self._pending:
            await self._open.wait()
            # One turn of the loop first: requests that are ready join this batch.
            await asyncio.sleep(0)
            if answered > 1:
                await self._gather(min(len(self._pending) + answered, self.max_batch))
            batch = self._next_batch()
            answered = len(batch)
            if not batch:
                continue
            try:
                await self._write(batch)
            except BaseException as exc:  # never leave a caller waiting forever
                for pending in batch:
                    if not pending.answer.done():
                        pending.answer.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise

    async def _gather(self, rows: int) -> None:
        """Wait until `rows` rows are pending, for at most GATHER_SECONDS."""
        if len(self._pending) >= rows:
            return
        loop = asyncio.get_running_loop()
        enough = self._enough = loop.create_future()
        self._enough_rows = rows
        timeout = loop.call_later(GATHER_SECONDS, _settle, enough)
        try:
            await enough
        finally:
            timeout.cancel()
            self._enough = None

    def _next_batch(self) -> list[_Pending[T, R]]:
        """The oldest pending rows of the first caller's actor, up to `max_batch`."""
        live = [p for p in self._pending if not p.answer.done()]  # a caller that gave up
        if not live:
            self._pending.clear()
            return []
        actor = live[0].row.caller.actor
        batch = [p for p in live if p.row.caller.actor == actor][: self.max_batch]
        taken = {id(p) for p in batch}
        self._pending = [p for p in live if id(p) not in taken]
        return batch

    async def _write(self, batch: list[_Pending[T, R]]) -> None:
        # Rows that arrive while this batch waits for the writer join the NEXT batch: this one
        # is fixed, so its answers match what was written.
        rows = [p.row for p in batch]
        for attempt in range(1, MAX_TRANSACTION_ATTEMPTS + 1):
            try:
                async with self.database.transaction() as session:
                    outcomes = await self._run_batch(session, rows)
                    if len(outcomes) != len(rows):
                        raise RuntimeError("a batch must answer every row")
            except Exception as exc:
                if is_retryable(exc) and attempt < MAX_TRANSACTION_ATTEMPTS:
                    await backoff_before_retry(attempt)
                    continue
                # The error's text can quote the rows' values: its type is enough here.
                log.warning(
                    "group commit batch failed; its rows are taken one by one",
                    group=self.name, rows=len(rows), error=type(exc).__name__,
                )  # fmt: skip
                await self._one_by_one(batch)
                return
            self.batches += 1
            BATCH_ROWS.labels(self.name).observe(len(rows))
            for pending, outcome in zip(batch, outcomes, strict=True):
                if pending.answer.done():
                    continue
                if isinstance(outcome, Exception):
                    pending.answer.set_exception(outcome)
                else:
                    pending.answer.set_result(outcome)
            return

    def _one(self, value: T) -> Callable[[AsyncSession], Awaitable[R]]:
        async def work(session: AsyncSession) -> R:
            return await self._run_one(session, value)

        return work

    async def _one_by_one(self, batch: list[_Pending[T, R]]) -> None:
        self.fallbacks += 1
        FALLBACKS.labels(self.name).inc()
        for pending in batch:
            with pending.row.caller.applied():
                try:
                    result = await self.database.run(self._one(pending.row.value))
                except Exception as exc:
                    if not pending.answer.done():
                        pending.answer.set_exception(exc)
                    continue
            if not pending.answer.done():
                pending.answer.set_result(result)
