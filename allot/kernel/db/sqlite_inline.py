"""An aiosqlite stand-in that runs each sqlite3 call on the event loop thread: the SQLite writer.

Why: aiosqlite runs every call (execute, fetch, commit) in a worker thread and wakes the loop
with the answer, ~180 µs per call where sqlite3 itself takes ~3 µs for a short statement, and
SQLAlchemy makes two to four such calls per statement. A lead's unit of work issues ~25
statements, so the hand-offs cost milliseconds per lead and compete with the loop for the CPU.
This module offers the part of aiosqlite's API that SQLAlchemy's `sqlite+aiosqlite`
adapter uses (`connect`, `Connection`, `Cursor`) and does the work inline. It is plugged in
with `create_async_engine(url, async_creator=async_creator(url, lock_timeout=...))`, the
documented hook for "a driver-level asyncio connection", which leaves the dialect,
its adapter and its exception translation as they are.

The trade-off: the event loop does nothing else while a statement runs. That is why only the
WRITER uses this: its statements are short (single-row writes and index lookups, tens of µs),
and `synchronous=NORMAL` in WAL mode means a commit does not fsync. Readers keep aiosqlite's
thread, so a long report never stalls the loop. Still blocking the loop: a slow statement on the
writer (a bulk UPDATE, or a query that scans because no index fits) and the WAL auto-checkpoint
that SQLite runs inside a commit now and then.

Lock waits never block the loop. The connection's busy timeout is 0 (do NOT set `PRAGMA
busy_timeout` on it), so a statement that finds the database locked by another connection (a CLI
command, or another `Database` in this process) fails at once. If no transaction was open and
nothing was written, nothing happened, so it is tried again after an `asyncio.sleep`, on SQLite's
own busy-handler schedule, for up to `lock_timeout` seconds. In practice that statement is the
writer's `BEGIN IMMEDIATE`. SQLite's busy handler would instead sleep inline, freezing the whole
process for the wait, and deadlock it when the lock holder is a coroutine of the same loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from itertools import chain, repeat
from typing import Any, TypeVar

from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import make_url

T = TypeVar("T")

# Seconds between attempts at a locked database: SQLite's own busy-handler schedule.
BUSY_RETRY_DELAYS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.025, 0.025, 0.05, 0.05, 0.1)

_Job = tuple["asyncio.Future[Any] | None", Callable[[], Any]]


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

    def __init__(self, connection: sqlite3.Connection, *, lock_timeout: float) -> None:
        self._connection: sqlite3.Connection | None = connection
        self._lock_timeout = lock_timeout
        self._tx = _InlineQueue()

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
                # SQLite says to roll the transaction back rather than retry the statement.
                if in_transaction or connection.total_changes != changes or not _is_busy(error):
                    raise
                waits = waits or _lock_waits(self._lock_timeout)
                wait = next(waits, None)
                if wait is None:
                    raise
            await asyncio.sleep(wait)

    def cursor(self) -> Cursor:
        return Cursor(self, self._conn.cursor())

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


class Cursor:
    """aiosqlite's cursor API over a sqlite3 cursor; `execute` and `executemany` may wait for a
    lock as the module docstring describes, everything else completes at once."""

    def __init__(self, connection: Connection, cursor: sqlite3.Cursor) -> None:
        self._connection = connection
        self._cursor = cursor

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *_exc_info: object) -> None:
        await self.close()

    async def __aiter__(self) -> AsyncIterator[Any]:  # SQLAlchemy's streamed results
        while rows := self._cursor.fetchmany():
            for row in rows:
                yield row

    async def execute(self, sql: str, parameters: Any = ()) -> Cursor:
        await self._connection._run(self._cursor.execute, sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Any) -> Cursor:
        await self._connection._run(self._cursor.executemany, sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany() if size is None else self._cursor.fetchmany(size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

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


async def connect(database: str, *, lock_timeout: float, **kwargs: Any) -> Connection:
    """Like `aiosqlite.connect`: `lock_timeout` is how long a statement waits (off the loop) for
    another connection's lock; the other keyword arguments go to `sqlite3.connect`."""
    # Busy timeout 0: a locked database must fail at once, to be waited for with asyncio.sleep.
    return Connection(sqlite3.connect(database, timeout=0, **kwargs), lock_timeout=lock_timeout)


def async_creator(url: str, *, lock_timeout: float) -> Callable[[], Awaitable[Connection]]:
    """The `async_creator` for `create_async_engine(url, ...)`: connects to the file `url` names
    with the sqlite3 options the URL carries, as the dialect would; the URL's `?timeout=`
    (seconds, sqlite3's name for the lock wait) overrides `lock_timeout`."""
    args, kwargs = SQLiteDialect_pysqlite().create_connect_args(make_url(url))
    kwargs["lock_timeout"] = kwargs.pop("timeout", lock_timeout)
    return partial(connect, *args, **kwargs)
