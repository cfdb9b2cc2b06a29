"""`allot deliveries list | show | retry | purge` on a migrated database: recipients masked,
a retry audited and sent by the next round."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from allot.kernel.clock import ManualClock, set_clock
from allot.kernel.db.engine import Database
from allot.kernel.delivery import DeliveryRunner, enqueue
from allot.kernel.logging import configure_logging
from tests.cli.conftest import cli, sqlite_url  # noqa: F401 (fixtures)
from tests.kernel.delivery.conftest import email_channel_for
from tests.kernel.delivery.servers import SmtpServer

EMAIL = "ivan.petrov@example.ru"


async def _send_two(url: str, smtp: SmtpServer) -> None:
    # A command pointed the log at the stream its runner captured (closed since): back to ours.
    configure_logging("ERROR", json=True)
    database = Database(url, pool_size=1)
    try:
        async with database.transaction() as session:
            await enqueue(session, "email", "cli:dead", EMAIL, {"subject": "s", "text": "t"})
            await enqueue(session, "email", "cli:ok", "olga@example.ru",
                          {"subject": "s", "text": "Позвоните +7 912 345-67-89"})  # fmt: skip
        channel = email_channel_for(smtp)
        await DeliveryRunner(database, {"email": channel}).run_once()
    finally:
        await database.dispose()


async def _scalar(url: str, sql: str) -> object:
    database = Database(url, pool_size=1)
    try:
        async with database.reader() as session:
            return (await session.execute(text(sql))).scalar_one()
    finally:
        await database.dispose()


def test_list_show_retry_and_purge(cli, sqlite_url, smtp):  # noqa: F811
    assert cli("migrate").exit_code == 0
    smtp.handler.refuse.add(EMAIL)
    asyncio.run(_send_two(sqlite_url, smtp))

    listed = cli("deliveries", "list")
    assert listed.exit_code == 0, listed.output
    assert "cli:dead" in listed.output
    assert "cli:ok" in listed.output
    assert "i***@example.ru" in listed.output
    assert "o***@example.ru" in listed.output
    assert EMAIL not in listed.output
    assert "olga@" not in listed.output
    dead = cli("deliveries", "list", "--status", "dead", "--channel", "email")
    assert "cli:dead" in dead.output
    assert "cli:ok" not in dead.output
    assert cli("deliveries", "list", "--status", "lost").exit_code == 1

    shown = cli("deliveries", "show", "cli:ok")
    assert shown.exit_code == 0, shown.output
    assert "status: delivered" in shown.output
    assert "provider ref: <" in shown.output
    assert "912 345" not in shown.output
    assert "***89" in shown.output
    assert cli("deliveries", "show", "cli:none").exit_code == 1

    smtp.handler.refuse.clear()
    retried = cli("deliveries", "retry", "cli:dead")
    assert retried.exit_code == 0, retried.output
    assert cli("deliveries", "retry", "cli:dead").exit_code == 1  # pending now, not dead
    assert cli("deliveries", "retry", "cli:ok").exit_code == 1  # delivered: never again
    audited = asyncio.run(_scalar(
        sqlite_url, "SELECT count(*) FROM audit_entries WHERE action = 'kernel.delivery.retried'"
    ))  # fmt: skip
    assert audited == 1
    asyncio.run(_send_two(sqlite_url, smtp))  # the next round (its enqueues are repeats)
    assert smtp.handler.keys() == ["cli:ok", "cli:dead"]

    assert cli("deliveries", "purge", "--older-than-days", "1").exit_code == 1  # no --yes
    purged = cli("deliveries", "purge", "--older-than-days", "1", "--yes")
    assert "Purged 0" in purged.output  # both are younger than a day
    previous = set_clock(ManualClock(datetime.now(UTC) + timedelta(days=2)))
    try:
        purged = cli("deliveries", "purge", "--older-than-days", "1", "--yes")
    finally:
        set_clock(previous)
    assert "Purged 2" in purged.output
    assert cli("deliveries", "show", "cli:ok").exit_code == 1
