"""Broker-mode fixtures: settings pointing at the real RabbitMQ under a namespace of the test's
own (every exchange and queue it declared is deleted afterwards), a consumer registry of the
test's own, an effects table handlers write to, a loopback TCP proxy the test can cut, and
`eventually` (poll a condition with a deadline; never sleep to synchronise)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aio_pika
import pytest
from sqlalchemy import text

from allot.kernel.config import Settings
from allot.kernel.context import bound
from allot.kernel.db.engine import Database
from allot.kernel.events import ConsumerRegistry, publish
from allot.kernel.events.broker import Topology, consumer_groups
from tests.tcp_proxy import TcpProxy

DEADLINE_SECONDS = 30.0


async def eventually(
    condition: Callable[[], Awaitable[bool]], timeout: float = DEADLINE_SECONDS, what: str = ""
) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if await condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def consumers() -> ConsumerRegistry:
    return ConsumerRegistry()


@pytest.fixture
def bus_settings(
    settings: Settings, rabbitmq_url: str, service_namespace: str, consumers: ConsumerRegistry
) -> Iterator[Settings]:
    """Broker mode under the test's namespace; afterwards its exchanges and queues are deleted
    (synchronous, so a fixture of either kind can ask for it)."""
    configured = settings.model_copy(
        update={
            "broker_url": rabbitmq_url,
            "broker_namespace": service_namespace,
            "broker_retry_base_seconds": 0.01,
            "broker_max_attempts": 3,
            "broker_partitions": 4,
            "broker_ordered_groups": "",
            "broker_relay_poll_seconds": 0.05,
        }
    )
    yield configured
    asyncio.run(delete_topology(rabbitmq_url, Topology.from_settings(configured), consumers))


async def delete_topology(url: str, topology: Topology, consumers: ConsumerRegistry) -> None:
    """Delete what the topology declares for the registry's groups, whether a test made them
    ordered or not (nothing else)."""
    groups = list(consumer_groups(consumers))
    exchanges, queues = topology.all_names(groups)
    ordered = dataclasses.replace(topology, ordered_groups=frozenset(groups))
    more_exchanges, more_queues = ordered.all_names(groups)
    exchanges = list(dict.fromkeys(exchanges + more_exchanges))
    queues = list(dict.fromkeys(queues + more_queues))
    connection = await aio_pika.connect(url)
    try:
        for name in queues:
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)
            with contextlib.suppress(Exception):
                await channel.close()
        for name in exchanges:
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.exchange_delete(name)
            with contextlib.suppress(Exception):
                await channel.close()
    finally:
        await connection.close()


class Effects:
    """A table outside the ORM that handlers write to in their unit of work: a row per effect,
    so an effect applied twice shows as two rows."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def record(
        self, session: Any, event_id: Any, consumer: str, key: str = "", seq: int = 0
    ) -> None:
        await session.execute(
            text(
                "INSERT INTO test_bus_effects (event_id, consumer, key, seq) "
                "VALUES (:event_id, :consumer, :key, :seq)"
            ),
            {"event_id": str(event_id), "consumer": consumer, "key": key, "seq": seq},
        )

    async def rows(self) -> list[tuple[str, str, str, int]]:
        async with self.database.reader() as session:
            result = await session.execute(
                text("SELECT event_id, consumer, key, seq FROM test_bus_effects ORDER BY n")
            )
            return [tuple(row) for row in result.all()]  # type: ignore[misc]

    async def count(self) -> int:
        return len(await self.rows())


@pytest.fixture
async def effects(database: Database) -> Effects:
    serial = "INTEGER PRIMARY KEY AUTOINCREMENT" if database.is_sqlite else "BIGSERIAL PRIMARY KEY"
    async with database.transaction() as session:
        await session.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS test_bus_effects (n {serial}, event_id TEXT, "
                "consumer TEXT, key TEXT, seq INTEGER)"
            )
        )
        await session.execute(text("DELETE FROM test_bus_effects"))
    return Effects(database)


async def publish_events(
    database: Database,
    count: int,
    *,
    type_: str = "test.thing.happened",
    key: str | None = None,
    payload: dict[str, Any] | None = None,
    correlation_id: str | None = None,
) -> list[uuid.UUID]:
    """`count` events in one committed transaction; aggregate = `key` (or a new one each)."""
    ids = []
    with bound(correlation_id=correlation_id):
        async with database.transaction() as session:
            for n in range(count):
                ids.append(
                    await publish(
                        session,
                        type=type_,
                        aggregate_type="test.thing",
                        aggregate_id=key or str(uuid.uuid4()),
                        payload={"n": n, **(payload or {})},
                    )
                )
    return ids


@pytest.fixture
async def proxy(rabbitmq_url: str) -> AsyncIterator[TcpProxy]:
    """A proxy to RabbitMQ the test cuts and restores (tests/tcp_proxy.py)."""
    tcp = await TcpProxy.for_url(rabbitmq_url).start()
    yield tcp
    await tcp.close()
