"""The SQLite inline driver (`allot.kernel.db.sqlite_inline`), on real database files: the driver
itself, the writer and reader engines built on it, how it behaves when the database is locked,
and how a reader's long statement leaves the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, event, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from allot.kernel.db import sqlite_inline
from allot.kernel.db.engine import Database

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String, unique=True, nullable=False),
    Column("n", Integer, nullable=False, default=0),
)

SHORT_LOCK_WAIT = 0.3


def url_of(path: Path, *, timeout: float | None = None) -> str:
    url = f"sqlite+aiosqlite:///{path}"
    return url if timeout is None else f"{url}?timeout={timeout}"


async def open_database(url: str) -> Database:
    database = Database(url)
    async with database.write_engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    return database


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(url_of(tmp_path / "inline.sqlite3"))
    yield database
    await database.dispose()


async def names(database: Database) -> list[str]:
    async with database.reader() as session:
        return list((await session.scalars(select(things.c.name).order_by(things.c.id))).all())


async def test_driver_round_trip(tmp_path: Path) -> None:
    path = str(tmp_path / "driver.sqlite3")
    conn = await sqlite_inline.connect(path, lock_timeout=1.0, isolation_level=None)
    cursor = conn.cursor()
    await cursor.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, n INTEGER)")
    await cursor.execute("BEGIN IMMEDIATE")
    await cursor.execute("INSERT INTO t (name, n) VALUES (?, ?)", ("a", 1))
    assert cursor.lastrowid == 1
    await cursor.executemany("INSERT INTO t (name, n) VALUES (?, ?)", [("b", 2), ("c", 3)])
    assert cursor.rowcount == 2
    await cursor.execute("UPDATE t SET n = n * 10 WHERE n >= ? RETURNING name, n", (2,))
    assert sorted(await cursor.fetchall()) == [("b", 20), ("c", 30)]
    await cursor.execute("SELECT name FROM t ORDER BY id")
    assert await cursor.fetchone() == ("a",)
    assert await cursor.fetchmany(5) == [("b",), ("c",)]
    await conn.commit()
    await conn.close()
    await conn.close()  # closing twice is harmless, as SQLAlchemy expects

    with sqlite3.connect(path) as check:
        assert check.execute("SELECT name, n FROM t ORDER BY id").fetchall() == [
            ("a", 1),
            ("b", 20),
            ("c", 30),
        ]
    with pytest.raises(ValueError, match="no active connection"):
        conn.cursor()


async def test_writer_round_trip_through_the_engine(database: Database) -> None:
    async with database.write_engine.begin() as conn:
        first = await conn.execute(insert(things).values(name="a"))
        assert first.lastrowid == 1
        returned = await conn.execute(insert(things).values(name="b").returning(things.c.id))
        assert returned.scalar_one() == 2
        many = await conn.execute(
            text("UPDATE things SET n = n + :step WHERE name = :name"),
            [{"step": 5, "name": "a"}, {"step": 7, "name": "b"}],
        )
        assert many.rowcount == 2
        changed = await conn.execute(
            update(things).where(things.c.n > 5).values(n=things.c.n * 2).returning(things.c.n)
        )
        assert changed.scalars().all() == [14]

    async with database.reader() as session:
        rows = (await session.execute(select(things.c.name, things.c.n))).all()
    assert sorted(tuple(row) for row in rows) == [("a", 5), ("b", 14)]


async def test_streamed_results_on_the_writer(database: Database) -> None:
    async with database.write_engine.begin() as conn:
        await conn.execute(insert(things), [{"name": f"n{i}"} for i in range(150)])
        result = await conn.stream(select(things.c.name).order_by(things.c.id))
        streamed = [row.name async for row in result]
    assert streamed == [f"n{i}" for i in range(150)]


async def test_integrity_error_and_rollback(database: Database) -> None:
    async with database.transaction() as session:
        await session.execute(insert(things).values(name="kept"))

    with pytest.raises(IntegrityError):
        async with database.transaction() as session:
            await session.execute(insert(things).values(name="rolled back"))
            await session.execute(insert(things).values(name="kept"))

    with pytest.raises(RuntimeError):
        async with database.transaction() as session:
            await session.execute(insert(things).values(name="also rolled back"))
            raise RuntimeError("the unit of work fails")

    assert await names(database) == ["kept"]
    async with database.transaction() as session:  # the writer is still usable
        await session.execute(insert(things).values(name="after"))
    assert await names(database) == ["kept", "after"]


async def test_writer_and_readers_run_inline(database: Database) -> None:
    for engine, reader in ((database.write_engine, False), (database.read_engine, True)):
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            assert type(raw.driver_connection) is sqlite_inline.Connection
            assert (raw.driver_connection.offload_after is not None) is reader
            journal = await conn.exec_driver_sql("PRAGMA journal_mode")
            assert journal.scalar() == "wal"
            # A lock wait must never happen inline, where it would freeze the event loop.
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 0
            assert (await conn.exec_driver_sql("PRAGMA query_only")).scalar() == int(reader)


async def test_writer_transactions_begin_immediate(tmp_path: Path) -> None:
    url = url_of(tmp_path / "two.sqlite3", timeout=SHORT_LOCK_WAIT)
    holder, other = await open_database(url), await open_database(url)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(holder.write_engine.sync_engine, "before_cursor_execute", record)
    try:
        async with holder.transaction() as session:
            await session.execute(insert(things).values(name="held"))
            # A deferred BEGIN would let this read-only unit of work start; IMMEDIATE waits for
            # the write lock, then gives up after the URL's timeout.
            started = time.perf_counter()
            with pytest.raises(OperationalError, match="database is locked"):
                async with other.transaction() as blocked:
                    await blocked.execute(select(things.c.id))
            assert time.perf_counter() - started >= SHORT_LOCK_WAIT
        assert statements[0] == "BEGIN IMMEDIATE"
        assert await names(other) == ["held"]
    finally:
        await holder.dispose()
        await other.dispose()


async def test_lock_wait_leaves_the_loop_free(tmp_path: Path) -> None:
    url = url_of(tmp_path / "wait.sqlite3")
    holder, waiter = await open_database(url), await open_database(url)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def write_while_locked() -> None:
        async with waiter.transaction() as session:
            await session.execute(insert(things).values(name="second"))

    ticker = asyncio.create_task(tick())
    try:
        async with holder.transaction() as session:
            await session.execute(insert(things).values(name="first"))
            blocked = asyncio.create_task(write_while_locked())
            await asyncio.sleep(0.3)
            assert not blocked.done()
            assert ticks >= 10  # waiting on an inline busy handler, the loop would stand still
        # The holder committed on this same loop, so the waiter gets the lock (inline it would
        # have deadlocked until its timeout).
        await asyncio.wait_for(blocked, timeout=5)
        assert await names(holder) == ["first", "second"]
    finally:
        ticker.cancel()
        await holder.dispose()
        await waiter.dispose()


async def test_cancelled_lock_wait_leaves_the_writer_usable(tmp_path: Path) -> None:
    url = url_of(tmp_path / "cancel.sqlite3")
    holder, waiter = await open_database(url), await open_database(url)

    async def write(name: str) -> None:
        async with waiter.transaction() as session:
            await session.execute(insert(things).values(name=name))

    try:
        async with holder.transaction() as session:
            await session.execute(insert(things).values(name="first"))
            cancelled = asyncio.create_task(write("never"))
            await asyncio.sleep(0.2)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
        await asyncio.wait_for(write("after"), timeout=5)
        assert await names(holder) == ["first", "after"]
    finally:
        await holder.dispose()
        await waiter.dispose()


# -- readers: a long statement leaves the loop --------------------------------------------------
# A statement SQLite takes well over a second to run (counting to COUNT_TO), and the thread
# that ran it: `thread_ident()` is a function registered on every reader connection.
COUNT_TO = 5_000_000
LONG_COUNT = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < :n) "
    "SELECT count(*), thread_ident() FROM c"
)


@pytest.fixture
async def readers(database: Database) -> Database:
    @event.listens_for(database.read_engine.sync_engine, "connect")
    def _register(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.create_function("thread_ident", 0, threading.get_ident)

    return database


async def test_a_short_read_runs_on_the_loop_thread(readers: Database) -> None:
    async with readers.reader() as session:
        ident = (await session.execute(text("SELECT thread_ident()"))).scalar_one()
        counted = (await session.execute(text(LONG_COUNT), {"n": 10})).one()
    assert ident == threading.get_ident()
    assert tuple(counted) == (10, threading.get_ident())


async def test_a_long_read_moves_to_a_thread_and_the_loop_goes_on(readers: Database) -> None:
    gaps: list[float] = []

    async def tick() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        await asyncio.sleep(0.02)
        started = time.perf_counter()
        async with readers.reader() as session:
            count, ident = (await session.execute(text(LONG_COUNT), {"n": COUNT_TO})).one()
        took = time.perf_counter() - started
    finally:
        ticker.cancel()
    assert count == COUNT_TO
    assert ident != threading.get_ident()
    assert took > 0.3  # long enough that an inline run would have shown as one gap
    # The loop ticked all along: no gap near the statement's length (a busy machine may
    # stretch a tick, never to a whole second of SQLite's work).
    assert len(gaps) > 10
    assert max(gaps) < took / 2


async def test_a_moved_read_keeps_its_snapshot(readers: Database) -> None:
    async with readers.transaction() as session:
        await session.execute(insert(things), [{"name": "before"}])
    async with readers.reader() as session:
        assert (await session.execute(select(things.c.name))).scalars().all() == ["before"]
        async with readers.transaction() as writer:  # committed after the snapshot was taken
            await writer.execute(insert(things), [{"name": "after"}])
        long_names = text(
            "SELECT name, thread_ident() FROM things, "
            "(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < :n) "
            "SELECT max(x) AS top FROM c) ORDER BY things.id"
        )
        rows = (await session.execute(long_names, {"n": COUNT_TO})).all()
    assert [row[0] for row in rows] == ["before"]
    assert rows[0][1] != threading.get_ident()
    assert await names(readers) == ["before", "after"]


async def test_a_cancelled_long_read_stops_and_leaves_the_reader_usable(
    readers: Database,
) -> None:
    async def count() -> int:
        async with readers.reader() as session:
            value = (await session.execute(text(LONG_COUNT), {"n": COUNT_TO * 20})).one()[0]
            return int(value)

    reading = asyncio.create_task(count())
    await asyncio.sleep(0.2)
    started = time.perf_counter()
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    # Interrupted, not waited for: counting to COUNT_TO * 20 takes tens of seconds.
    assert time.perf_counter() - started < 2
    for _ in range(8):  # every connection of the readers' pool answers again
        async with readers.reader() as session:
            count, _ident = (await session.execute(text(LONG_COUNT), {"n": 1000})).one()
            assert count == 1000


async def test_a_moved_read_runs_at_full_speed_beside_a_busy_loop(readers: Database) -> None:
    async def timed_count() -> float:
        started = time.perf_counter()
        async with readers.reader() as session:
            count, ident = (await session.execute(text(LONG_COUNT), {"n": COUNT_TO})).one()
        assert (count, ident != threading.get_ident()) == (COUNT_TO, True)
        return time.perf_counter() - started

    alone = await timed_count()
    busy = True

    async def spin() -> None:  # the loop thread busy, as a loaded server's is
        while busy:
            # ~10 ms of pure Python between two turns of the loop. (Turning it every few µs
            # slows any other thread on the 2-core VMs we test on, GIL or not: a thread doing
            # nothing but SQLite ran 10x slower beside a loop of `epoll_wait(0)` calls.)
            for _ in range(50):
                sum(range(20_000))
            await asyncio.sleep(0)

    spinner = asyncio.create_task(spin())
    try:
        # A thread that needs the GIL every few µs (SQLite's progress handler calling into
        # Python) waits for it up to 5 ms each time here: a hundred times slower, or worse.
        beside = await asyncio.wait_for(timed_count(), timeout=max(20 * alone, 10))
    finally:
        busy = False
        await spinner
    assert beside < 5 * alone + 1
