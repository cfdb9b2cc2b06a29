"""SQLite WAL checkpoints off the event loop.

By default the connection that commits past 1,000 WAL pages copies them into the database file
and syncs it, inside that commit. Our writer runs inline on the event loop
(`sqlite_inline.py`), so that commit froze every request of the process for as long as the
copy and the sync took: the p99 of the HTTP intake at 32 clients halved without it (see
docs/benchmarks.md). While the server runs, the writer's automatic checkpoints are off and this
loop checkpoints every second from a connection of its own, in a worker thread: PASSIVE mode
waits for no reader or writer, and the writer restarts the WAL from its start by itself once
everything in it has been copied. Without a running server (CLI, tests) nothing changes.
"""

from __future__ import annotations

import asyncio
import sqlite3

from sqlalchemy import text
from sqlalchemy.engine import make_url

from allot.kernel.db.engine import Database
from allot.kernel.logging import get_logger
from allot.kernel.loops import WakeableLoop

log = get_logger(__name__)

CHECKPOINT_EVERY_SECONDS = 1.0
SQLITE_DEFAULT_AUTOCHECKPOINT = 1000  # pages


class WalCheckpointer:
    def __init__(self, database: Database) -> None:
        self.database = database
        path = make_url(database.url).database
        if not database.is_sqlite or not path:
            raise ValueError("WAL checkpoints are for a SQLite database file")
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._loop = WakeableLoop("allot-wal-checkpoint", self._round, CHECKPOINT_EVERY_SECONDS)
        self.checkpoints = 0

    async def start(self) -> None:
        await self._set_writer_autocheckpoint(0)
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        await self._set_writer_autocheckpoint(SQLITE_DEFAULT_AUTOCHECKPOINT)
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def _set_writer_autocheckpoint(self, pages: int) -> None:
        async with self.database.transaction() as session:
            await session.execute(text(f"PRAGMA wal_autocheckpoint={int(pages)}"))

    async def _round(self) -> int:
        await asyncio.to_thread(self.checkpoint_now)
        return 0  # the loop then waits its second

    def checkpoint_now(self) -> tuple[int, int, int]:
        """One PASSIVE checkpoint: (busy, WAL frames, frames copied), as SQLite reports them."""
        if self._connection is None:
            self._connection = sqlite3.connect(self.path, check_same_thread=False)
        busy, frames, copied = self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        return int(busy), int(frames), int(copied)
