"""PostgreSQL's pool hands out only connections that answer (engine.py, `_ping_on_checkout`)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from allot.kernel.db.engine import Database
from tests.conftest import PG_ADMIN_URL


async def _backend_pid(database: Database) -> int:
    async with database.transaction() as session:
        return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _terminate(pid: int) -> None:
    admin = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            done = await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            assert done.scalar_one() is True
    finally:
        await admin.dispose()


async def test_a_connection_whose_backend_was_terminated_in_the_pool_is_replaced(postgres_url):
    """The backend of the pool's only connection is terminated while it sits idle; the next
    units of work run on a new connection instead of failing their first statement."""
    database = Database(postgres_url, pool_size=1)
    try:
        first = await _backend_pid(database)
        for _ in range(3):  # the terminated one is replaced each time, at once
            await _terminate(first)
            second = await _backend_pid(database)
            assert second != first
            first = second
        assert database.pool_status()["checked_out"] == 0
    finally:
        await database.dispose()
