"""`allot events dlq list | show | replay | purge`, over RabbitMQ's dead-letter queues (broker
mode) and over dead outbox rows (single-process mode)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aio_pika
import pytest
from sqlalchemy import select, update

from allot.kernel.config import Settings
from allot.kernel.db.base import Base
from allot.kernel.db.engine import Database
from allot.kernel.events import ConsumerRegistry, OutboxEvent
from allot.kernel.events.broker import BrokerWorker, Relay, Topology
from tests.cli.conftest import Invoke, cli, sqlite_url  # noqa: F401 (fixtures)
from tests.kernel.broker.conftest import delete_topology, eventually, publish_events


@pytest.fixture
def broker_env(
    cli: Invoke,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    rabbitmq_url: str,
    service_namespace: str,
    tmp_path: Path,
):
    consumers = ConsumerRegistry()

    @consumers.subscribe("picky.handler", "test.thing.happened")
    async def picky(session, event):
        raise ValueError(f"cannot handle {event.payload['n']}")

    settings = Settings(
        environment="test",
        data_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'worker.sqlite3'}",
        broker_url=rabbitmq_url,
        broker_namespace=service_namespace,
        broker_max_attempts=2,
        broker_retry_base_seconds=0.01,
        broker_ordered_groups="",
    )
    monkeypatch.setenv("ALLOT_BROKER_URL", rabbitmq_url)
    monkeypatch.setenv("ALLOT_BROKER_NAMESPACE", service_namespace)
    monkeypatch.setenv("ALLOT_BROKER_ORDERED_GROUPS", "")
    yield settings, consumers
    asyncio.run(delete_topology(rabbitmq_url, Topology.from_settings(settings), consumers))


async def _dead_letter_three(settings: Settings, consumers: ConsumerRegistry) -> list[uuid.UUID]:
    database = Database(settings.resolved_database_url)
    async with database.write_engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    relay = Relay(database, settings, consumers=consumers)
    worker = BrokerWorker(database, settings, consumers=consumers)
    await relay.start()
    await worker.start()
    try:
        ids = await publish_events(database, 3)

        async def all_dead() -> bool:
            return worker.dead_lettered == 3

        await eventually(all_dead, what="three dead letters")
    finally:
        await worker.stop()
        await relay.stop()
        await database.dispose()
    return ids


async def _depth(settings: Settings, queue_name: str) -> int:
    connection = await aio_pika.connect(settings.broker_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()


def test_dead_letter_queues_can_be_listed_shown_replayed_and_purged(
    cli: Invoke,  # noqa: F811
    broker_env,
) -> None:
    settings, consumers = broker_env
    ids = asyncio.run(_dead_letter_three(settings, consumers))
    topology = Topology.from_settings(settings)

    listed = cli("events", "dlq", "list", "--group", "picky")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.strip().splitlines()
    assert lines[0].split("\t")[:5] == ["Group", "Event", "Type", "Consumer", "Attempts"]
    assert sorted(line.split("\t")[1] for line in lines[1:]) == sorted(str(i) for i in ids)
    assert {line.split("\t")[4] for line in lines[1:]} == {"2"}
    # Listing gave every message back.
    assert asyncio.run(_depth(settings, topology.dead_queue("picky"))) == 3
    assert len(cli("events", "dlq", "list", "--group", "picky", "--limit", "2").output.strip()
               .splitlines()) == 3  # fmt: skip

    shown = cli("events", "dlq", "show", str(ids[1]), "--group", "picky")
    assert shown.exit_code == 0, shown.output
    assert f"event: {ids[1]}" in shown.output
    assert "consumer: picky.handler" in shown.output
    assert "error: ValueError: cannot handle 1" in shown.output
    assert asyncio.run(_depth(settings, topology.dead_queue("picky"))) == 3

    missing = cli("events", "dlq", "show", str(uuid.uuid4()), "--group", "picky")
    assert missing.exit_code == 1
    assert "no dead letter" in missing.output

    replayed = cli("events", "dlq", "replay", str(ids[0]), "--group", "picky")
    assert replayed.exit_code == 0, replayed.output
    assert "Replayed 1" in replayed.output
    assert asyncio.run(_depth(settings, topology.dead_queue("picky"))) == 2
    assert asyncio.run(_depth(settings, topology.queue("picky"))) == 1  # back to its consumers

    refused = cli("events", "dlq", "purge", "--group", "picky")
    assert refused.exit_code == 1
    assert "--yes" in refused.output
    assert asyncio.run(_depth(settings, topology.dead_queue("picky"))) == 2

    purged = cli("events", "dlq", "purge", "--group", "picky", "--yes")
    assert purged.exit_code == 0, purged.output
    assert "Purged 2" in purged.output
    assert cli("events", "dlq", "list", "--group", "picky").output.strip().count("\n") == 0


def test_without_a_broker_the_commands_work_on_dead_outbox_rows(
    cli: Invoke,  # noqa: F811
    sqlite_url: str,  # noqa: F811
) -> None:
    assert cli("migrate").exit_code == 0

    async def make_dead() -> list[uuid.UUID]:
        database = Database(sqlite_url)
        try:
            ids = await publish_events(database, 3)
            async with database.transaction() as session:
                await session.execute(
                    update(OutboxEvent)
                    .where(OutboxEvent.id.in_(ids[:2]))
                    .values(status="dead", attempts=10, last_error="audit.copy: ValueError: no")
                )
            return ids
        finally:
            await database.dispose()

    async def statuses() -> dict[uuid.UUID, tuple[str, int]]:
        database = Database(sqlite_url)
        try:
            async with database.reader() as session:
                rows = await session.execute(
                    select(OutboxEvent.id, OutboxEvent.status, OutboxEvent.attempts)
                )
                return {i: (s, a) for i, s, a in rows.all()}
        finally:
            await database.dispose()

    ids = asyncio.run(make_dead())
    listed = cli("events", "dlq", "list")
    assert listed.exit_code == 0, listed.output
    assert sorted(line.split("\t")[0] for line in listed.output.strip().splitlines()[1:]) == sorted(
        str(i) for i in ids[:2]
    )
    other_group = cli("events", "dlq", "list", "--group", "leads")
    assert other_group.output.strip().count("\n") == 0

    shown = cli("events", "dlq", "show", str(ids[0]))
    assert "error: audit.copy: ValueError: no" in shown.output
    assert cli("events", "dlq", "show", str(ids[2])).exit_code == 1  # pending, not dead
    assert cli("events", "dlq", "show", "not-an-id").exit_code == 1

    assert "Replayed 1" in cli("events", "dlq", "replay", str(ids[0])).output
    state = asyncio.run(statuses())
    assert state[ids[0]] == ("pending", 0)
    assert state[ids[1]] == ("dead", 10)

    assert cli("events", "dlq", "replay").exit_code == 1  # neither an id nor --all
    assert "Purged 1" in cli("events", "dlq", "purge", "--group", "audit", "--yes").output
    state = asyncio.run(statuses())
    assert set(state) == {ids[0], ids[2]}
