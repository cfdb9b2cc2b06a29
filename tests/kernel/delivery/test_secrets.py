"""The Telegram bot token is in every request URL; it never reaches a log line or the delivery
log, whatever happens to the request. Recipients and message text stay out of the logs too."""

from __future__ import annotations

import contextlib
import sys

import pytest

from allot.kernel.delivery import enqueue
from allot.kernel.delivery.channels.telegram import TelegramChannel
from allot.kernel.logging import configure_logging
from tests.kernel.delivery.conftest import delivery_rows
from tests.kernel.delivery.servers import BOT_TOKEN, CHAT_NOT_FOUND, free_port, too_many_requests

TOKEN_SECRET = BOT_TOKEN.split(":")[1]


@pytest.fixture(autouse=True)
def restore_logging():
    yield
    with contextlib.redirect_stderr(sys.__stderr__):  # capsys closed the captured stream
        configure_logging("INFO", json=True)


async def test_the_bot_token_never_reaches_logs_or_last_error(
    database, clock, telegram, make_runner, capsys
):
    configure_logging("DEBUG", json=True)  # httpx logs each request's URL at INFO
    telegram.state.replies.extend(
        [too_many_requests(1), CHAT_NOT_FOUND, (500, {"ok": False, "error_code": 500,
         "description": f"Internal error at /bot{BOT_TOKEN}/sendMessage"})]
    )  # fmt: skip
    for n, chat in enumerate(("1001", "1002", "1003", "1004")):
        async with database.transaction() as session:
            await enqueue(session, "telegram", f"k:{n}", chat, {"text": f"secret text {n}"})
    unreachable = TelegramChannel(token=BOT_TOKEN, api_url=f"http://127.0.0.1:{free_port()}")
    async with database.transaction() as session:
        await enqueue(session, "email", "k:mail", "anna@example.ru", {"subject": "s", "text": "t"})

    runner = make_runner()
    await runner.run_once()  # 429, 400, 500 (quoting the URL back), one delivered
    cut_off = make_runner(channels={"telegram": unreachable})
    async with database.transaction() as session:
        await enqueue(session, "telegram", "k:unreachable", "1005", {"text": "x"})
    await cut_off.run_once()  # connection refused
    await unreachable.close()

    output = capsys.readouterr()
    logged = output.out + output.err
    rows = await delivery_rows(database)
    errors = " ".join(row.last_error or "" for row in rows)
    assert "sendMessage" in logged  # the request lines are there, their token masked
    assert "/bot***/sendMessage" in logged
    assert {row.status for row in rows} == {"pending", "dead", "delivered"}
    for where in (logged, errors):
        assert BOT_TOKEN not in where
        assert TOKEN_SECRET not in where
    assert "Internal error at /bot***/sendMessage" in errors
    assert "no answer from Telegram (ConnectError)" in errors
    for personal in ("anna@example.ru", "secret text"):
        assert personal not in logged
    assert repr(unreachable) == "<TelegramChannel>"
