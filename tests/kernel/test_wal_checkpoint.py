"""SQLite WAL checkpoints run off the event loop while the server runs (kernel/db/checkpoint.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from allot.kernel.db import Database
from allot.kernel.db.checkpoint import WalCheckpointer


async def writer_autocheckpoint(database: Database) -> int:
    async with database.transaction() as session:
        return int((await session.execute(text("PRAGMA wal_autocheckpoint"))).scalar_one())


async def test_the_writer_stops_checkpointing_and_the_checkpointer_copies_the_wal(database):
    if not database.is_sqlite:
        pytest.skip("WAL checkpoints are SQLite's")
    checkpointer = WalCheckpointer(database)
    await checkpointer.start()
    try:
        assert await writer_autocheckpoint(database) == 0
        async with database.transaction() as session:
            await session.execute(text("CREATE TABLE wal_probe (n INTEGER, pad TEXT)"))
        for chunk in range(5):  # ~5 MB through the WAL: far past the 1,000-page default
            async with database.transaction() as session:
                await session.execute(
                    text("INSERT INTO wal_probe VALUES (:n, :pad)"),
                    [{"n": chunk * 1000 + n, "pad": "x" * 1000} for n in range(1000)],
                )
        busy, frames, copied = checkpointer.checkpoint_now()
        assert busy == 0
        assert frames > 1000  # the writer left them all in the WAL
        assert copied == frames  # and the checkpoint copied every one
    finally:
        await checkpointer.stop()
    assert await writer_autocheckpoint(database) == 1000
    async with database.reader() as session:
        count = (await session.execute(text("SELECT count(*) FROM wal_probe"))).scalar_one()
    assert count == 5000


def test_only_a_sqlite_file_has_a_wal_to_checkpoint():
    with pytest.raises(ValueError, match="SQLite"):
        WalCheckpointer(Database("postgresql+asyncpg://nobody@127.0.0.1:1/none"))
