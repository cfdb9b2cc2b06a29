"""An aiosqlite stand-in that runs each sqlite3 call on the event loop thread: the SQLite writer
and readers.

Why: aiosqlite runs every call (execute, fetch, commit) in a worker thread and wakes the loop
with the answer, ~180 µs per call where sqlite3 itself takes ~3 µs for a short statement, and
SQLAlchemy makes two to four such calls per statement. A lead's unit of work issues ~25
statements, so the hand-offs cost milliseconds per lead and compete with the loop for the CPU;
through aiosqlite's threads the readers made an authenticated GET cost about twice the CPU.
This module offers the part of aiosqlite's API that SQLAlchemy's `sqlite+aiosqlite`
adapter uses (`connect`, `Connection`, `Cursor`) and does the work inline. It is plugged in
with `create_async_engine(url, async_creator=async_creator(url, lock_timeout=...))`, the
documented hook for "a driver-level asyncio connection", which leaves the dialect,
its adapter and its exception translation as they are.

The trade-off: the event loop does nothing else while a statement runs. The WRITER's statements
are short (single-row writes and index lookups, tens of µs), and `synchronous=NORMAL` in WAL
mode means a commit does not fsync. Still blocking the loop there: a slow statement on the
writer (a bulk UPDATE, or a query that scans because no index fits) and the WAL auto-checkpoint
that SQLite runs inside a commit now and then.

READERS (`offload_after=` seconds) cannot promise short statements: a report scans, a text
search reads every row. So a reader's statement starts inline with a budget: SQLite's progress
handler looks at the clock every `PROGRESS_STEPS` virtual-machine steps, and a statement still
running when the budget is spent is interrupted and run again, from the start, in a thread of
`_OFFLOAD`, with no progress handler (sqlite3 releases the GIL while it works, so the loop goes on
meanwhile; a handler would make the thread take the GIL back every few µs). Re-running
is safe because a reader only reads (`query_only`), and it reads the same snapshot: an
interrupted SELECT leaves its read transaction open (tests/kernel/test_sqlite_inline.py). A
reader's statement fetches all its rows in the same call (SQLAlchemy's adapter fetches them all
right after `execute` anyway), so the budget covers the whole read. Short reads thus cost what
the writer's do; a long one costs its budget more, once.

Lock waits never block the loop. The connection's busy timeout is 0 (do NOT set `PRAGMA
busy_timeout` on it), so a statement that finds the database locked by another connection (a CLI
command, or another `Database` in this process) fails at once. If nothing was written, nothing
happened, so it is tried again after an `asyncio.sleep`, on SQLite's own busy-handler schedule,
for up to `lock_timeout` seconds: the writer's when no transaction was open (in practice its
`BEGIN IMMEDIATE`), a reader's always (in WAL mode a reader meets a lock only while the WAL is
being reset, before its snapshot is taken). SQLite's busy handler would instead sleep inline,
freezing the whole process for the wait, and deadlock it when the lock holder is a coroutine of
the same loop.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import chain, repeat
from typing import Any, TypeVar

from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import make_url

T = TypeVar("T")

# Seconds between attempts at a locked database: SQLite's own busy-handler schedule.
BUSY_RETRY_DELAYS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.025, 0.025, 0.05, 0.05, 0.1)

_Job = tuple["asyncio.Future[Any] | None", Callable[[], Any]]

# A reader's progress handler runs every this many SQLite virtual-machine steps (a few µs of
# work each: the clock is read often enough to keep to a budget of a millisecond, seldom enough
# to cost nothing measurable).
PROGRESS_STEPS = 1000
# Where readers' long statements run. One thread per reader connection a pool may hold at once
# would do; more only wait for the CPU.
_OFFLOAD = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sqlite-reader")


def _is_busy(error: sqlite3.OperationalError) -> bool:
    return error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY  # extended codes keep the base


def _lock_waits(timeout: float) -> Iterator[float]:
    """The sleeps between attempts at a locked database, until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    for delay in chain(BUSY_RETRY_DELAYS, repeat(BUSY_RETRY_DELAYS[-1])):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        yield min(delay, remaining)


class _InlineQueue:
    """Where aiosqlite has its queue to the worker thread. SQLAlchemy's `isolation_level` setter
    puts a (future, function) pair there directly; here the function runs at once."""

    def put_nowait(self, job: _Job) -> None:
        future, function = job
        try:
            result = function()
        except Exception as error:
            if future is None:
                raise
            future.set_exception(error)
        else:
            if future is not None:
                future.set_result(result)


class Connection:
    """An open SQLite connection whose coroutines complete without ever suspending, except
    to wait for another connection's lock (see the module docstring)."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        *,
        lock_timeout: float,
        offload_after: float | None = None,
    ) -> None:
        self._connection: sqlite3.Connection | None = connection
        self._lock_timeout = lock_timeout
        self._tx = _InlineQueue()
        # A reader (see the module docstring): statements past `offload_after` seconds inline
        # move to a thread. `_deadline` is when the running inline statement's budget ends.
        self.offload_after = offload_after
        self._deadline = math.inf
        if offload_after is not None:
            connection.set_progress_handler(self._over_budget, PROGRESS_STEPS)

    def _over_budget(self) -> bool:
        return time.perf_counter() > self._deadline

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._connection is None:
            raise ValueError("no active connection")  # aiosqlite's words: SQLAlchemy maps them
        return self._connection

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        waits: Iterator[float] | None = None
        while True:
            connection = self._conn
            in_transaction, changes = connection.in_transaction, connection.total_changes
            try:
                return function(*args)
            except sqlite3.OperationalError as error:
                # Inside a transaction a busy statement may have done part of its work, and
                # SQLite says to roll the transaction back rather than retry the statement. A
                # reader writes nothing, so it may always try again.
                writer_in_transaction = in_transaction and self.offload_after is None
                if (
                    writer_in_transaction
                    or connection.total_changes != changes
                    or not _is_busy(error)
                ):
                    raise
                waits = waits or _lock_waits(self._lock_timeout)
                wait = next(waits, None)
                if wait is None:
                    raise
            await asyncio.sleep(wait)

    def cursor(self) -> Cursor:
        return Cursor(self, self._conn.cursor())

    async def read(self, cursor: sqlite3.Cursor, sql: str, parameters: Any) -> list[Any]:
        """A reader's statement and all its rows: inline within the budget, else in a thread."""
        try:
            return await self._run(self._read_inline, cursor, sql, parameters)
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode != sqlite3.SQLITE_INTERRUPT:
                raise
        offloaded = asyncio.get_running_loop().run_in_executor(
            _OFFLOAD, self._read_off_loop, cursor, sql, parameters
        )
        try:
            return await asyncio.shield(offloaded)
        except asyncio.CancelledError:
            # The thread still has the connection, and whoever cancelled us is about to roll it
            # back or close it: stop the statement and let the thread let go first.
            self._conn.interrupt()
            await asyncio.wait({offloaded})
            # Its error is the interruption asked for here: taken, so that it is not logged
            # when the future is collected.
            offloaded.exception()
            raise

    def _read_off_loop(self, cursor: sqlite3.Cursor, sql: str, parameters: Any) -> list[Any]:
        # Without the progress handler: calling into Python every few µs, the thread would need
        # the GIL that often, and wait for it up to the switch interval (5 ms) each time the
        # loop is busy: a 0.5 s statement took 100 s beside a busy loop.
        connection = self._conn
        connection.set_progress_handler(None, 0)
        try:
            return _read_all(cursor, sql, parameters)
        finally:
            connection.set_progress_handler(self._over_budget, PROGRESS_STEPS)

    def _read_inline(self, cursor: sqlite3.Cursor, sql: str, parameters: Any) -> list[Any]:
        assert self.offload_after is not None
        self._deadline = time.perf_counter() + self.offload_after
        try:
            return _read_all(cursor, sql, parameters)
        finally:
            self._deadline = math.inf

    async def commit(self) -> None:
        await self._run(self._conn.commit)

    async def rollback(self) -> None:
        await self._run(self._conn.rollback)

    async def create_function(
        self, name: str, num_params: int, func: Callable[..., Any], deterministic: bool = False
    ) -> None:
        self._conn.create_function(name, num_params, func, deterministic=deterministic)

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        # typeshed lists only the named levels; "" (SQLite's deferred BEGIN) is valid too.
        self._conn.isolation_level = value  # type: ignore[assignment]

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        """Close without awaiting (SQLAlchemy's terminate, e.g. at garbage collection)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()  # an open transaction is rolled back


def _read_all(cursor: sqlite3.Cursor, sql: str, parameters: Any) -> list[Any]:
    return cursor.execute(sql, parameters).fetchall()


class Cursor:
    """aiosqlite's cursor API over a sqlite3 cursor; `execute` and `executemany` may wait for a
    lock as the module docstring describes, everything else completes at once. On a reader,
    `execute` has read every row already; the fetch methods hand them out."""

    def __init__(self, connection: Connection, cursor: sqlite3.Cursor) -> None:
        self._connection = connection
        self._cursor = cursor
        self._rows: list[Any] | None = None  # a reader's rows not yet fetched

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *_exc_info: object) -> None:
        await self.close()

    async def __aiter__(self) -> AsyncIterator[Any]:  # SQLAlchemy's streamed results
        while rows := await self.fetchmany():
            for row in rows:
                yield row

    async def execute(self, sql: str, parameters: Any = ()) -> Cursor:
        if self._connection.offload_after is None:
            await self._connection._run(self._cursor.execute, sql, parameters)
        else:
            self._rows = None
            self._rows = await self._connection.read(self._cursor, sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Any) -> Cursor:
        await self._connection._run(self._cursor.executemany, sql, parameters)
        return self

    async def fetchone(self) -> Any:
        if self._rows is None:
            return self._cursor.fetchone()
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        if self._rows is None:
            return self._cursor.fetchmany() if size is None else self._cursor.fetchmany(size)
        size = self._cursor.arraysize if size is None else size
        rows, self._rows = self._rows[:size], self._rows[size:]
        return rows

    async def fetchall(self) -> list[Any]:
        if self._rows is None:
            return self._cursor.fetchall()
        rows, self._rows = self._rows, []
        return rows

    async def close(self) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


async def connect(
    database: str, *, lock_timeout: float, offload_after: float | None = None, **kwargs: Any
) -> Connection:
    """Like `aiosqlite.connect`: `lock_timeout` is how long a statement waits (off the loop) for
    another connection's lock; `offload_after` makes a reader (see the module docstring); the
    other keyword arguments go to `sqlite3.connect`."""
    if offload_after is not None:
        kwargs["check_same_thread"] = False  # its long statements run in `_OFFLOAD`, one at a time
    # Busy timeout 0: a locked database must fail at once, to be waited for with asyncio.sleep.
    return Connection(
        sqlite3.connect(database, timeout=0, **kwargs),
        lock_timeout=lock_timeout,
        offload_after=offload_after,
    )


def async_creator(
    url: str, *, lock_timeout: float, offload_after: float | None = None
) -> Callable[[], Awaitable[Connection]]:
    """The `async_creator` for `create_async_engine(url, ...)`: connects to the file `url` names
    with the sqlite3 options the URL carries, as the dialect would; the URL's `?timeout=`
    (seconds, sqlite3's name for the lock wait) overrides `lock_timeout`. With `offload_after`
    (seconds) the connections are readers."""
    args, kwargs = SQLiteDialect_pysqlite().create_connect_args(make_url(url))
    kwargs["lock_timeout"] = kwargs.pop("timeout", lock_timeout)
    kwargs["offload_after"] = offload_after
    return partial(connect, *args, **kwargs)
