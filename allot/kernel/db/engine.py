"""Engines and sessions for SQLite (embedded, one process) and PostgreSQL (scaled out).

SQLite: WAL mode, ONE writer connection whose transactions start with `BEGIN IMMEDIATE` (so two
writers never deadlock on a lock upgrade; they queue on the pool instead) and a pool of read-only
connections that never block the writer. Both run their statements inline on the event loop
(`sqlite_inline`: no thread hand-off per statement); a reader's statement that outlasts
`SQLITE_READ_INLINE_SECONDS` moves to a thread, so a long report never stalls the loop for more
than that. PostgreSQL: one asyncpg pool serves both roles; a connection is pinged (one round
trip) as the pool hands it out.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session
from sqlalchemy.util import await_

from allot.kernel.cache import forget_all_caches
from allot.kernel.db import sqlite_inline


def normalize_url(url: str) -> str:
    """Accept plain `postgresql://` and `sqlite:///` URLs and pick the async drivers."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed.render_as_string(hide_password=False)


T = TypeVar("T")

# How long a SQLite connection waits for another connection's lock (e.g. a CLI command writing)
# before failing with "database is locked". The writer waits with asyncio.sleep, off the loop.
SQLITE_LOCK_TIMEOUT_SECONDS = 10.0
# How long a reader's statement may run inline on the event loop before it is moved to a thread
# (sqlite_inline): longer than any index lookup, short enough that a report's scan stalls
# nobody noticeably. A statement that goes over is run again from the start: it costs this much
# more, once.
SQLITE_READ_INLINE_SECONDS = 0.001

# PostgreSQL: deadlock_detected, serialization_failure. Both mean "nothing was written; run the
# whole unit of work again", which is always safe because a unit of work commits all or nothing.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
MAX_TRANSACTION_ATTEMPTS = 4


def is_retryable(exc: BaseException) -> bool:
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code in RETRYABLE_SQLSTATES


# What a lost or refused database connection looks like through SQLAlchemy + asyncpg/aiosqlite:
# the server went away (terminated backend, restart, network), so the work itself never ran.
# asyncpg sometimes reports a connection killed mid-operation as an InterfaceError about its
# protocol state ("cannot switch to state ..."), hence the message checks.
_CONNECTION_LOST_MESSAGES = (
    "connection was closed",
    "connection is closed",
    "cannot switch to state",
    "connection_lost",
    "terminating connection",
    "the database system is",  # starting up / shutting down / in recovery mode
)


PING_SECONDS = 5.0  # how long `Database.lost_connection` waits for the database to answer


def is_connection_lost(exc: BaseException) -> bool:
    """True when `exc` looks like a connection that could not be made or was dropped. A
    network error of anything (the database, or an API a handler calls) looks like this:
    `Database.lost_connection` tells the database's apart."""
    for error in _chain(exc):
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            return True
        if isinstance(error, ConnectionError | OSError | TimeoutError):
            return True
        text = str(error).lower()
        if any(message in text for message in _CONNECTION_LOST_MESSAGES):
            return True
    return False


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


async def backoff_before_retry(attempt: int) -> None:
    await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))  # decorrelate the contenders


async def yield_to_waiters() -> None:
    """Give the event loop one turn after a unit of work released its connection.

    On SQLite nothing on the writer suspends, so a busy task could release the one writer
    connection and take it back at once, unit after unit, while other tasks wait in the pool's
    queue (the pool hands the connection to whoever asks first, not to the longest waiter).
    One turn here lets the waiter that was woken take it: the writer is shared fairly."""
    await asyncio.sleep(0)


class AllotSession(Session):
    """Sync session class behind our AsyncSessions; carries after-commit hooks in `info`."""


def dialect_insert(session: AsyncSession | Session) -> Any:
    """`insert` of the session's dialect, for ON CONFLICT clauses (PostgreSQL and SQLite)."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    bind = session.bind
    return pg_insert if bind is not None and bind.dialect.name == "postgresql" else sqlite_insert


_insert_ignoring_cache: dict[tuple[str, str], Any] = {}


def insert_ignoring_conflicts(session: AsyncSession | Session, table: Any) -> Any:
    """`INSERT INTO table ... ON CONFLICT DO NOTHING`, built once per dialect and table; run it
    with a parameter dict (`session.execute(statement, values)`). Built once because building
    and hashing a statement costs more than executing it on the intake path."""
    bind = session.bind
    dialect = bind.dialect.name if bind is not None else "sqlite"
    key = (dialect, table.name)
    statement = _insert_ignoring_cache.get(key)
    if statement is None:
        statement = dialect_insert(session)(table).on_conflict_do_nothing()
        _insert_ignoring_cache[key] = statement
    return statement


def sync_session_of(session: AsyncSession | Session) -> Session:
    """The ORM session itself (where `info` and the events live), given either kind."""
    return session.sync_session if isinstance(session, AsyncSession) else session


def on_commit(session: AsyncSession | Session, callback: Callable[[], None]) -> None:
    """Run `callback` after the session's current transaction commits (never on rollback)."""
    sync = sync_session_of(session)
    callbacks = sync.info.setdefault("after_commit", [])
    if callback not in callbacks:  # bulk writers register the same hook thousands of times
        callbacks.append(callback)


@event.listens_for(AllotSession, "after_commit")
def _run_after_commit(session: Session) -> None:
    for callback in session.info.pop("after_commit", []):
        callback()


@event.listens_for(AllotSession, "after_rollback")
def _drop_after_commit(session: Session) -> None:
    session.info.pop("after_commit", None)


def _sqlite_pragmas(dbapi_connection: Any, *, read_only: bool) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is deferred).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # No `busy_timeout`: sqlite_inline keeps it at 0, since SQLite's busy handler would sleep on
    # the event loop thread; it waits with asyncio.sleep instead.
    if read_only:
        cursor.execute("PRAGMA query_only=ON")
    cursor.close()


def _ping_on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """The pool's check of a PostgreSQL connection it hands out, in place of `pool_pre_ping`:
    one round trip (`SELECT 1` by the simple query protocol) where SQLAlchemy's pre-ping for
    asyncpg takes three (BEGIN, a prepared `;`, ROLLBACK: made for PgBouncer's transaction mode,
    and a simple query needs no transaction there). A unit of work of one SELECT: 2.98 -> 1.50
    ms here (docs/benchmarks.md, session 10). Checking asyncpg's `is_closed()` alone would cost
    nothing but misses a backend terminated a moment ago (its FATAL message read, the socket's
    end not yet): that connection's first statement would fail. DisconnectionError makes the
    pool drop this connection and hand out another."""
    try:
        await_(dbapi_connection.driver_connection.execute("SELECT 1"))
    except Exception as exc:
        raise DisconnectionError("the connection did not answer its check-out ping") from exc


class Database:
    """The process's database handle: `transaction()` for writes, `reader()` for reads."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        read_pool_size: int = 4,
        echo: bool = False,
    ) -> None:
        forget_all_caches()  # values cached from another database must not leak into this one
        self._turn: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self.url = normalize_url(url)
        self.dialect = make_url(self.url).get_backend_name()
        if self.dialect == "sqlite":
            if ":memory:" in self.url or make_url(self.url).database in (None, ""):
                raise ValueError("SQLite needs a file: the writer and readers share it")
            self.write_engine = self._sqlite_engine(pool_size=1, read_only=False, echo=echo)
            self.read_engine = self._sqlite_engine(
                pool_size=read_pool_size, read_only=True, echo=echo
            )
        elif self.dialect == "postgresql":
            self.write_engine = create_async_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=pool_size,
                echo=echo,
            )
            event.listen(self.write_engine.sync_engine, "checkout", _ping_on_checkout)
            self.read_engine = self.write_engine
        else:
            raise ValueError(f"Unsupported database: {self.dialect} (use sqlite or postgresql)")
        self._write_sessions = async_sessionmaker(
            self.write_engine, expire_on_commit=False, sync_session_class=AllotSession
        )
        self._read_sessions = async_sessionmaker(
            self.read_engine, expire_on_commit=False, sync_session_class=AllotSession
        )

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def _sqlite_engine(self, *, pool_size: int, read_only: bool, echo: bool) -> AsyncEngine:
        engine = create_async_engine(
            self.url,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=60,
            echo=echo,
            async_creator=sqlite_inline.async_creator(
                self.url,
                lock_timeout=SQLITE_LOCK_TIMEOUT_SECONDS,
                offload_after=SQLITE_READ_INLINE_SECONDS if read_only else None,
            ),
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            _sqlite_pragmas(dbapi_connection, read_only=read_only)

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Any) -> None:
            # The writer takes the write lock up front; readers take a snapshot.
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine

    def write_session(self) -> AsyncSession:
        """A session on the writer; the caller owns commit/rollback/close (see `transaction`)."""
        return self._write_sessions()

    def read_session(self) -> AsyncSession:
        return self._read_sessions()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """The unit of work outside HTTP (jobs, handlers, CLI): commit on success, else rollback."""
        await self.take_writer_turn()
        try:
            async with self._write_sessions() as session:
                try:
                    yield session
                    await session.commit()
                except BaseException:
                    await session.rollback()
                    raise
        finally:
            self.end_writer_turn()
            await yield_to_waiters()

    # SQLite has one writer connection. Its pool hands it to whoever asks first, so under load a
    # newcomer can take it again and again ahead of a unit of work that has waited for seconds.
    # The turn is a FIFO lock taken before the connection: units of work write in arrival
    # order. (asyncio.Lock lets no newcomer past a queued waiter.) PostgreSQL needs none.
    async def take_writer_turn(self) -> None:
        if self.is_sqlite:
            await self._writer_turn().acquire()

    def end_writer_turn(self) -> None:
        if self.is_sqlite:
            self._writer_turn().release()

    def _writer_turn(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._turn is None or self._turn[0] is not loop:
            self._turn = (loop, asyncio.Lock())  # a lock serves one event loop
        return self._turn[1]

    async def run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `work` as one unit of work, retried from scratch on a deadlock or serialization
        failure (PostgreSQL). Prefer this to `transaction()` for anything that can contend."""
        for attempt in range(1, MAX_TRANSACTION_ATTEMPTS + 1):
            try:
                async with self.transaction() as session:
                    return await work(session)
            except DBAPIError as exc:
                if not is_retryable(exc) or attempt == MAX_TRANSACTION_ATTEMPTS:
                    raise
                await backoff_before_retry(attempt)
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncSession]:
        # Closing (not rolling back) ends the snapshot but keeps loaded objects readable.
        async with self._read_sessions() as session:
            yield session

    async def ping(self) -> None:
        async with self.read_engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def lost_connection(self, exc: BaseException) -> bool:
        """Did `exc` come from the database being unreachable (not from the work itself)? It
        must look like a lost connection (`is_connection_lost`) AND the database must not
        answer a ping now: a handler's own network error (an API it calls) is not mistaken for
        a database outage."""
        if not is_connection_lost(exc):
            return False
        try:
            async with asyncio.timeout(PING_SECONDS):
                await self.ping()
        except Exception:
            return True
        return False

    def pool_status(self) -> dict[str, int]:
        pool: Any = self.write_engine.pool
        return {
            "size": int(pool.size()),
            "checked_out": int(pool.checkedout()),
            "overflow": int(pool.overflow()),
        }

    async def dispose(self) -> None:
        await self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            await self.read_engine.dispose()
