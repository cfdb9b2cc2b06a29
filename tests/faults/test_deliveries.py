"""kill -9 of a delivery runner: the at-least-once window, proven with real processes, a real
SMTP server and PostgreSQL.

The SMTP server records a message and then holds its 250 until the test says so: the runner is
killed at that exact point (the provider accepted, the `delivered` mark never came), by
construction rather than by timing. A new runner process sends such a row again once its lease
ran out; nothing else is ever sent twice.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import select

from allot.kernel.db.engine import Database
from allot.kernel.delivery import Delivery, enqueue
from tests.architecture.boundaries import REPO_ROOT
from tests.kernel.delivery.runner_process import STARTED
from tests.kernel.delivery.servers import SmtpServer

LEASE_SECONDS = 6.0  # the killed runner's rows wait this long before they are sent again
TIMEOUT_SECONDS = 5.0  # no send of the killed runner may time out before the kill
DEADLINE_SECONDS = 60.0  # any one wait, on a loaded 2-core machine


class RunnerProcess:
    def __init__(self, url: str, smtp: SmtpServer, batch: int, log: Path) -> None:
        self.log = log
        args = [url, str(smtp.port), str(batch), str(LEASE_SECONDS), str(TIMEOUT_SECONDS)]
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.kernel.delivery.runner_process", *args],
                cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def started(self) -> RunnerProcess:
        await poll(lambda: STARTED in self.output(), "the runner process started", self)
        return self

    def kill9(self) -> None:
        assert self.process.poll() is None, self.output()
        self.process.kill()  # SIGKILL: no drain, no mark
        self.process.wait(10)


async def poll(
    condition: Callable[[], bool | Awaitable[bool]], what: str, *watched: RunnerProcess
) -> None:
    """Until `condition` holds; fails at the deadline, or at once when a watched process died."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        result = condition()
        if result if isinstance(result, bool) else await result:
            return
        for process in watched:
            assert process.process.poll() is None, f"runner died:\n{process.output()[-3000:]}"
        assert time.monotonic() < deadline, f"not within {DEADLINE_SECONDS} s: {what}"
        await asyncio.sleep(0.02)


async def rows(database: Database) -> dict[str, Delivery]:
    async with database.reader() as session:
        found = (await session.execute(select(Delivery))).scalars()
        return {row.key: row for row in found}


async def settled(database: Database) -> bool:
    return all(row.status == "delivered" for row in (await rows(database)).values())


async def test_a_runner_killed_after_the_server_accepted_sends_again_with_the_same_message_id(
    fleet_db: Database, fleet_database_url: str, tmp_path: Path
) -> None:
    smtp = SmtpServer().start()
    smtp.handler.hold_from = 1  # the first message is recorded, its 250 held
    first = second = None
    try:
        async with fleet_db.transaction() as session:
            await enqueue(session, "email", "window:1", "ivan@example.ru",
                          {"subject": "Заявка", "text": "Вам назначена заявка"})  # fmt: skip
        first = await RunnerProcess(fleet_database_url, smtp, 10, tmp_path / "a.log").started()
        await poll(lambda: smtp.handler.held == 1, "the server holding the message", first)
        first.kill9()
        row = (await rows(fleet_db))["window:1"]
        assert (row.status, row.attempts) == ("sending", 1)  # accepted, but never marked
        smtp.handler.release.set()

        second = await RunnerProcess(fleet_database_url, smtp, 10, tmp_path / "b.log").started()
        await poll(lambda: settled(fleet_db), "the row delivered by the second runner", second)
    finally:
        for process in (first, second):
            if process is not None and process.process.poll() is None:
                process.kill9()
        smtp.stop()

    row = (await rows(fleet_db))["window:1"]
    assert (row.status, row.attempts) == ("delivered", 2)
    copies = smtp.handler.messages
    assert len(copies) == 2
    assert copies[0]["Message-ID"] == copies[1]["Message-ID"] == row.provider_ref
    assert smtp.handler.keys() == ["window:1", "window:1"]


async def test_a_stream_with_the_runner_killed_midway_reaches_everyone_duplicating_only_in_flight(
    fleet_db: Database, fleet_database_url: str, tmp_path: Path
) -> None:
    total, batch, hold_from = 500, 20, 150
    keys = [f"stream:{n:03d}" for n in range(total)]
    async with fleet_db.transaction() as session:
        for n, key in enumerate(keys):
            await enqueue(session, "email", key, f"user{n}@example.ru",
                          {"subject": f"#{n}", "text": "Новая заявка"})  # fmt: skip
    smtp = SmtpServer().start()
    smtp.handler.hold_from = hold_from  # from the 150th message on: recorded, 250 held
    first = second = None
    try:
        first = await RunnerProcess(fleet_database_url, smtp, batch, tmp_path / "a.log").started()
        await poll(lambda: smtp.handler.held >= 1, "a message held mid-stream", first)
        first.kill9()
        in_flight = {k for k, r in (await rows(fleet_db)).items() if r.status == "sending"}
        held = set(smtp.handler.keys()[hold_from - 1 :])
        smtp.handler.release.set()

        second = await RunnerProcess(fleet_database_url, smtp, batch, tmp_path / "b.log").started()
        await poll(lambda: settled(fleet_db), "every delivery delivered", second)
    finally:
        for process in (first, second):
            if process is not None and process.process.poll() is None:
                process.kill9()
        smtp.stop()

    received = Counter(smtp.handler.keys())
    duplicated = {key for key, copies in received.items() if copies > 1}
    final = await rows(fleet_db)
    assert set(received) == set(keys)  # everyone, at least once
    assert max(received.values()) == 2
    assert 1 <= len(in_flight) <= batch  # the kill left at most one claim batch undecided
    assert held <= duplicated <= in_flight  # accepted-but-unmarked ones, and only those, twice
    assert {row.status for row in final.values()} == {"delivered"}
    assert {key for key, row in final.items() if row.attempts == 2} == in_flight
