"""Fixtures of the delivery tests: the local SMTP and Bot API servers, channels pointed at them,
and runners on the test's database (both backends) and clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select

from allot.kernel.db.engine import Database
from allot.kernel.delivery import Delivery, DeliveryRunner
from allot.kernel.delivery.channels.email import EmailChannel
from allot.kernel.delivery.channels.telegram import TelegramChannel
from tests.kernel.delivery.servers import BOT_TOKEN, SmtpServer, TelegramServer

SENDER = "allot@crm.example.ru"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def telegram() -> Iterator[TelegramServer]:
    server = TelegramServer().start()
    yield server
    server.stop()


def email_channel_for(server: SmtpServer, timeout: float = 10.0) -> EmailChannel:
    return EmailChannel(
        host="127.0.0.1", port=server.port, sender=SENDER, security="none",
        timeout_seconds=timeout,
    )  # fmt: skip


@pytest.fixture
async def make_runner(
    database: Database, smtp: SmtpServer, telegram: TelegramServer
) -> AsyncIterator[Callable[..., DeliveryRunner]]:
    """`make_runner(**options)`: a runner with both channels (or `channels=`), closed after."""
    made: list[DeliveryRunner] = []

    def make(**options: Any) -> DeliveryRunner:
        channels = options.pop("channels", None)
        if channels is None:
            channels = {
                "email": email_channel_for(smtp),
                "telegram": TelegramChannel(token=BOT_TOKEN, api_url=telegram.url,
                                            timeout_seconds=10.0),
            }  # fmt: skip
        options.setdefault("retry_base_seconds", 30.0)
        options.setdefault("lease_seconds", 60.0)
        runner = DeliveryRunner(database, channels, **options)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        for channel in runner.channels.values():
            await channel.close()


async def delivery_rows(database: Database) -> list[Delivery]:
    async with database.reader() as session:
        return list((await session.execute(select(Delivery).order_by(Delivery.id))).scalars())


async def delivery(database: Database, key: str) -> Delivery:
    async with database.reader() as session:
        row = (await session.execute(select(Delivery).where(Delivery.key == key))).scalar_one()
        return row
