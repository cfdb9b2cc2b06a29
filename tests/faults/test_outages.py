"""Outages with real processes (issue 5, "Faults"): `allot relay`, `allot worker` and `allot api`
subprocesses (the `fleet` fixture, tests/faults/conftest.py) on a PostgreSQL database of the
test's own, the machine's RabbitMQ under a namespace of the test's own, and Redis.

- the broker unreachable (a loopback TCP proxy the test cuts) while leads come in over HTTP and
  events are written: the API keeps answering 201, the outbox holds the events, and they drain
  once the proxy is restored;
- RabbitMQ closing this test's connections (`rabbitmqctl close_connection`, as a broker restart
  does) while events stream: relay and worker reconnect by themselves;
- PostgreSQL terminating every backend of the test's database mid-stream: relay and workers
  recover by themselves, and nothing stays claimed or pending;
- PostgreSQL unreachable for a few seconds mid-stream (a proxy cut): no healthy event may end
  as a dead letter (a known failure, see the test);
- a poison message through real workers: retried, dead-lettered (`allot events dlq list`), the
  rest keeps flowing, and `allot events dlq replay` applies it once after the cause is fixed.

Every effect is counted: the harness's consumer (tests/faults/outage_harness.py) writes one row
per application, with no unique key, and each test checks that every event of its types has
exactly one row after the processes were stopped (a late duplicate would be counted too).
Nothing waits by sleeping: every wait polls a condition against a deadline and fails at once,
with the log, if a process died.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from allot.kernel.db.engine import Database
from allot.kernel.events import OutboxEvent, publish
from tests.conftest import IN_CI, PG_ADMIN_URL
from tests.contexts.leads.helpers import lead_desk
from tests.faults.conftest import (
    STOPPED,
    Fleet,
    Role,
    admin_token,
    create_tables,
    lead_body,
    new_external_ids,
    wait_for,
)
from tests.faults.outage_harness import CONSUMER, GROUP, LEAD_CREATED, PING, TABLES
from tests.tcp_proxy import TcpProxy

SETTLE_SECONDS = 90  # a backlog drained after an outage, on the same busy cores
MAX_ATTEMPTS = 4
# Small, so the poison pill is quick: caps of 0.1, 0.2 and 0.4 s before its 2nd, 3rd, 4th try.
RETRY_BASE_SECONDS = 0.1
SETTINGS = {
    "broker_max_attempts": str(MAX_ATTEMPTS),
    "broker_retry_base_seconds": str(RETRY_BASE_SECONDS),
    "broker_partitions": "2",
    "broker_relay_poll_seconds": "0.05",
    # A relay whose lock connection was terminated takes the lock again after this.
    "broker_relay_standby_seconds": "0.5",
}
RECONNECTING = "broker unreachable; reconnecting with backoff"  # one warning per outage


@pytest.fixture
def outages(fleet: Fleet) -> Fleet:
    """The fleet, running its roles through this file's harness (its tables created first)."""
    create_tables(fleet.database_url, TABLES)
    fleet.harness = "tests.faults.outage_harness"
    fleet.groups = {GROUP}
    return fleet


def start(fleet: Fleet, role: str, *args: str, **settings: str) -> Role:
    return fleet.start(role, *args, **{**SETTINGS, **settings})


def records(role: Role, event: str) -> list[dict[str, Any]]:
    """The JSON log records of a process whose `event` is `event`."""
    marker = f'"event": "{event}"'
    return [json.loads(line) for line in role.output.splitlines()
            if line.startswith("{") and marker in line]  # fmt: skip


def logged_again(role: Role, text: str) -> Callable[[], bool]:
    """A condition: `text` is in the process's log more often than now."""
    now = role.output.count(text)
    return lambda: role.output.count(text) > now


async def stop_all(*roles: Role) -> None:
    """SIGTERM every role at once; each must drain and exit 0."""
    codes = await asyncio.gather(*(role.stop() for role in roles))
    for role, code in zip(roles, codes, strict=True):
        assert code == 0, f"{role.name} exited {code}:\n{role.tail()}"
        if role.role != "api":  # uvicorn logs its own lines
            assert STOPPED in role.output, role.tail()


# -- the database, as the test reads it ------------------------------------------------------


async def effects(db: Database) -> Counter[str]:
    """How many effect rows each event id has."""
    async with db.reader() as session:
        rows = await session.execute(
            text("SELECT event_id, count(*) FROM outage_effects GROUP BY event_id")
        )
        return Counter(dict(rows.all()))


async def counted_ids(db: Database) -> set[str]:
    """Every event the harness's consumer takes, as the outbox holds them."""
    async with db.reader() as session:
        rows = await session.execute(
            select(OutboxEvent.id).where(OutboxEvent.type.in_([PING, LEAD_CREATED]))
        )
        return {str(event_id) for event_id in rows.scalars()}


async def statuses(db: Database, ids: list[str] | None = None) -> Counter[str]:
    """Outbox rows by status (of `ids`, or all)."""
    statement = select(OutboxEvent.status, func.count()).group_by(OutboxEvent.status)
    if ids is not None:
        statement = statement.where(OutboxEvent.id.in_([uuid.UUID(i) for i in ids]))
    async with db.reader() as session:
        return Counter(dict((await session.execute(statement)).all()))


async def publish_pings(db: Database, count: int, **payload: Any) -> list[str]:
    async with db.transaction() as session:
        return [
            str(await publish(session, type=PING, aggregate_type="outagetest",
                              aggregate_id=str(uuid.uuid4()), payload={"n": n, **payload}))
            for n in range(count)
        ]  # fmt: skip


async def all_dispatched(db: Database, ids: list[str]) -> bool:
    return await statuses(db, ids) == Counter({"dispatched": len(ids)})


async def all_applied(db: Database) -> bool:
    expected = await counted_ids(db)
    return bool(expected) and set(await effects(db)) == expected


async def assert_each_applied_once(db: Database, written: set[str]) -> None:
    """Every event of the counted types has exactly one effect row; nothing is left pending."""
    expected = await counted_ids(db)
    assert written <= expected, "an event the test saw committed is missing from the outbox"
    counted = await effects(db)
    assert set(counted) == expected, f"{len(expected - set(counted))} events never applied"
    doubled = {event_id: n for event_id, n in counted.items() if n != 1}
    assert not doubled, f"applied more than once: {doubled}"
    assert (await statuses(db)).get("pending", 0) == 0, "events left pending in the outbox"


class Stream:
    """Writes pings in small committed batches until stopped: the stream an outage hits. A
    batch whose connection was terminated under it is simply not counted as written (the
    checks compare with what the outbox holds); `written` has the ids of committed batches."""

    def __init__(self, db: Database, batch: int = 20, pause: float = 0.03) -> None:
        self.db = db
        self.batch = batch
        self.pause = pause
        self.written: list[str] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Stream:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # terminated under it: the next batch goes on
                self.written += await publish_pings(self.db, self.batch)
            # Pacing, not synchronisation: a steady ~500 events/s rather than one burst.
            await asyncio.sleep(self.pause)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


async def more_effects(db: Database, count: int) -> Callable[[], Any]:
    """A condition: `count` more effect rows than now."""
    base = sum((await effects(db)).values())

    async def condition() -> bool:
        return sum((await effects(db)).values()) >= base + count

    return condition


async def started(relay: Role, *workers: Role) -> None:
    await relay.started()
    for worker in workers:
        await worker.consuming()


# -- 1. the broker unreachable while work comes in ------------------------------------------


@pytest.fixture
async def proxy(rabbitmq_url: str) -> AsyncIterator[TcpProxy]:
    tcp = await TcpProxy.for_url(rabbitmq_url).start()
    yield tcp
    await tcp.close()


async def post_leads(http: httpx.AsyncClient, external_ids: list[str], first: int) -> None:
    """Leads `first`, `first + 1`, ... (one per external id) through the API at once; every one
    must answer 201."""
    answers = await asyncio.gather(
        *(http.post("/api/v1/leads", json=lead_body(external_id, n))
          for n, external_id in enumerate(external_ids, start=first))
    )  # fmt: skip
    for answer in answers:
        assert answer.status_code == 201, answer.text


async def test_broker_down_the_api_keeps_accepting_and_the_outbox_drains_once_back(
    outages: Fleet, fleet_db: Database, proxy: TcpProxy, rabbitmq_url: str
) -> None:
    db = fleet_db
    through_proxy = proxy.url_through(rabbitmq_url)
    relay = start(outages, "relay", broker_url=through_proxy)
    worker = start(outages, "worker", broker_url=through_proxy)  # every group
    api = start(outages, "api", broker_url=through_proxy)
    roles = (relay, worker, api)
    await lead_desk(db, agents=2, capacity=1000)  # leads are assigned in their transaction
    token = await admin_token(outages.database_url)
    written = set(await publish_pings(db, 20))
    external_ids = new_external_ids(40)
    await started(relay, worker)
    await api.started()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=api.base_url, headers=headers, timeout=30) as http:
        # The whole path works through the proxy before the outage.
        await post_leads(http, external_ids[:8], 0)
        await wait_for(lambda: all_applied(db), SETTLE_SECONDS, "the first events applied", *roles)

        reconnecting = [logged_again(role, RECONNECTING) for role in (relay, worker)]
        proxy.cut()
        for role, tried in zip((relay, worker), reconnecting, strict=True):
            # It lost its connection (one warning per outage) and is reconnecting.
            await wait_for(tried, 30, f"{role.name} reconnecting", *roles)
        outage: list[str] = []
        pending_seen: list[int] = []
        for start_at in range(8, 40, 8):
            await post_leads(http, external_ids[start_at : start_at + 8], start_at)  # no broker
            outage += await publish_pings(db, 50)
            pending_seen.append((await statuses(db)).get("pending", 0))
        assert pending_seen == sorted(pending_seen), pending_seen  # the outbox only grew
        assert pending_seen[-1] >= len(outage) + 32  # the pings and the 32 leads' events
        assert await statuses(db, outage) == Counter({"pending": len(outage)})
        assert not set(await effects(db)) & set(outage), "applied while the broker was away"

        proxy.restore()
        await wait_for(lambda: all_applied(db), SETTLE_SECONDS, "the outbox drained", *roles)
        await wait_for(lambda: all_dispatched(db, outage), SETTLE_SECONDS,
                       "the outage's events marked dispatched", *roles)  # fmt: skip
    await stop_all(*roles)
    await assert_each_applied_once(db, written | set(outage))
    # The contexts' own consumers recovered too: the customers timeline (an ordered group, on
    # partition queues) took every lead's creation.
    async with db.reader() as session:
        created = await session.execute(
            select(OutboxEvent.id).where(OutboxEvent.type == LEAD_CREATED)
        )
        lead_events = set(created.scalars())
        taken = await session.execute(
            text("SELECT message_id FROM kernel_inbox "
                 "WHERE consumer = 'customers.timeline_from_leads'")
        )  # fmt: skip
        assert len(lead_events) == 40
        assert lead_events <= set(taken.scalars())


# -- 2. RabbitMQ closes the connections (as a restart does) mid-stream ----------------------


async def command(*args: str, seconds: float = 60) -> str:
    """Run a command without blocking the event loop; its output (it must exit 0)."""
    process = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), seconds)
    assert process.returncode == 0, f"{args} exited {process.returncode}:\n{out.decode()}"
    return out.decode()


def client_ports(pid: int, server_port: int, *, closing_too: bool = False) -> set[int]:
    """Local ports of the established TCP connections of process `pid` to `server_port` (and,
    with `closing_too`, of those the server has closed and the process not yet: CLOSE_WAIT):
    its socket inodes (/proc/<pid>/fd) looked up in the kernel's TCP tables."""
    states = {"01", "08"} if closing_too else {"01"}
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, remote, state, inode = (line.split()[i] for i in (1, 2, 3, 9))
            if (
                state in states
                and inode in inodes
                and int(remote.rsplit(":", 1)[1], 16) == server_port
            ):
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


@pytest.fixture
def rabbitmqctl() -> str:
    found = shutil.which("rabbitmqctl")
    if found is None:
        if IN_CI:
            pytest.fail("CI=true but rabbitmqctl is not installed")
        pytest.skip("rabbitmqctl not installed")
    return found


async def test_rabbitmq_closing_the_connections_mid_stream_is_recovered_without_a_hand(
    outages: Fleet, fleet_db: Database, rabbitmq_url: str, rabbitmqctl: str
) -> None:
    db = fleet_db
    amqp_port = urlsplit(rabbitmq_url).port or 5672
    relay = start(outages, "relay")
    worker = start(outages, "worker", "--consumers", GROUP)
    roles = (relay, worker)
    await started(relay, worker)
    stream = Stream(db).start()
    await wait_for(await more_effects(db, 200), SETTLE_SECONDS, "the stream flowing", *roles)

    # This test's connections, by the client port RabbitMQ reports for each socket of these
    # processes (their names also carry the namespace and pid: `connection.connection_name`).
    before = {role.name: client_ports(role.pid, amqp_port) for role in roles}
    assert all(before.values()), before
    listing = await command(rabbitmqctl, "-q", "list_connections", "peer_port", "pid",
                            "--no-table-headers")  # fmt: skip
    by_port = {int(line.split("\t")[0]): line.split("\t")[1]
               for line in listing.splitlines() if line.strip()}  # fmt: skip
    written_before = len(stream.written)
    victims = [by_port[port] for ports in before.values() for port in ports]
    await asyncio.gather(
        *(
            command(rabbitmqctl, "-q", "close_connection", victim, "outage test")
            for victim in victims
        )
    )

    # Both connect again by themselves, and the stream goes on through the new connections.
    for role in roles:

        def reconnected(role: Role = role) -> bool:
            now = client_ports(role.pid, amqp_port)
            return bool(now) and not now & before[role.name]

        await wait_for(reconnected, SETTLE_SECONDS, f"{role.name} reconnected", *roles)
    reconnected_at = len(stream.written)
    await wait_for(lambda: len(stream.written) >= reconnected_at + 200, SETTLE_SECONDS,
                   "more events written", *roles)  # fmt: skip
    await stream.stop()
    assert written_before < reconnected_at < len(stream.written)
    await wait_for(lambda: all_applied(db), SETTLE_SECONDS, "every event applied", *roles)
    await wait_for(lambda: all_dispatched(db, stream.written), SETTLE_SECONDS,
                   "every event marked dispatched", *roles)  # fmt: skip
    await stop_all(*roles)
    await assert_each_applied_once(db, set(stream.written))


# -- 3. PostgreSQL drops every connection mid-stream -----------------------------------------


async def terminate_backends(database_name: str) -> set[int]:
    """`pg_terminate_backend` every backend of the test's own database (and of no other);
    returns the client ports of those terminated."""
    admin = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            # In the select list, never in WHERE: the planner may evaluate a WHERE condition
            # on pg_stat_activity before the database filter, i.e. for every backend.
            rows = await conn.execute(
                text(
                    "SELECT client_port, pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": database_name},
            )
            return {int(port) for port, done in rows.all() if done}
    finally:
        await admin.dispose()


# Longer than the reconnect backoff's cap (10 s): a role waiting out its backoff after an
# earlier cut holds no connection until it tries again.
CUT_EACH_ROLE_SECONDS = 30.0


async def terminate_each_role_once(roles: Sequence[Role], database: str, port: int) -> None:
    """Terminate the database's backends until each role has lost a connection of its own.
    Passes repeat until then (bounded in time, so the test always cuts every role and never
    passes vacuously): one pass has found no backend at all to terminate under a loaded CI
    run, and a role backing off after an earlier cut has no connection for seconds. Each
    role's connections are looked up before and after each pass, so a connection it opened
    during the pass, cut at once and still closing, counts too."""
    terminated: set[int] = set()
    seen: dict[str, set[int]] = {role.name: set() for role in roles}
    deadline = asyncio.get_running_loop().time() + CUT_EACH_ROLE_SECONDS
    spared = [role.name for role in roles]
    while asyncio.get_running_loop().time() < deadline:
        for role in roles:
            seen[role.name] |= client_ports(role.pid, port)
        terminated |= await terminate_backends(database)
        for role in roles:
            seen[role.name] |= client_ports(role.pid, port, closing_too=True)
        spared = [name for name, ports in seen.items() if not ports & terminated]
        if not spared:
            return
        await asyncio.sleep(0.05)  # a pause between passes, not a synchronisation
    raise AssertionError(
        f"no connection of {', '.join(spared)} terminated in {CUT_EACH_ROLE_SECONDS:.0f} s"
    )


async def test_database_connections_terminated_mid_stream_are_recovered_without_a_hand(
    outages: Fleet, fleet_db: Database
) -> None:
    db = fleet_db
    url = make_url(outages.database_url)
    relay = start(outages, "relay")
    workers = [start(outages, "worker", "--consumers", GROUP) for _ in range(2)]
    roles = (relay, *workers)
    await started(relay, *workers)
    stream = Stream(db).start()
    for _ in range(3):
        # Mid-stream: the relay claims and marks, the workers apply and commit.
        await wait_for(await more_effects(db, 150), SETTLE_SECONDS, "the stream flowing", *roles)
        await terminate_each_role_once(roles, str(url.database), url.port or 5432)
    await wait_for(await more_effects(db, 150), SETTLE_SECONDS, "the stream flowing on", *roles)
    await stream.stop()
    await wait_for(lambda: all_applied(db), SETTLE_SECONDS, "every event applied", *roles)
    # Nothing stays claimed by a unit of work that died with its connection.
    await wait_for(lambda: all_dispatched(db, stream.written), SETTLE_SECONDS,
                   "every event marked dispatched", *roles)  # fmt: skip
    await stop_all(*roles)
    await assert_each_applied_once(db, set(stream.written))


# -- 4. PostgreSQL unreachable for a few seconds mid-stream ----------------------------------

OUTAGE_SECONDS = 2.0  # the retries of a message take at most 0.7 s here (RETRY_BASE_SECONDS)


async def test_database_unreachable_for_seconds_mid_stream_dead_letters_nothing(
    outages: Fleet, fleet_db: Database
) -> None:
    db = fleet_db
    database = await TcpProxy.for_url(outages.database_url).start()
    through_proxy = database.url_through(outages.database_url)
    # Only the worker loses the database: the relay keeps publishing the stream, so messages
    # reach the worker during the outage however fast it had caught up before it.
    relay = start(outages, "relay")
    worker = start(outages, "worker", "--consumers", GROUP, database_url=through_proxy)
    roles = (relay, worker)
    try:
        await started(relay, worker)
        stream = Stream(db).start()  # the test writes on its own connection, not cut
        await wait_for(await more_effects(db, 150), SETTLE_SECONDS, "the stream flowing", *roles)
        database.cut()
        # The worker meets the outage; from then on it lasts OUTAGE_SECONDS (its length is the
        # scenario: longer than a message's retries take, shorter than a real failover).
        failing = ("batch apply failed; applying one by one", "event handler failed",
                   "worker batch failed")  # fmt: skip
        await wait_for(lambda: any(records(worker, event) for event in failing), 30,
                       "the worker meeting the outage", *roles)  # fmt: skip
        met_at = time.monotonic()
        await wait_for(lambda: time.monotonic() >= met_at + OUTAGE_SECONDS, 30, "the outage")
        database.restore()
        await wait_for(await more_effects(db, 150), SETTLE_SECONDS, "the stream flowing on", *roles)
        await stream.stop()

        async def settled() -> bool:
            return bool(records(worker, "event dead-lettered")) or await all_applied(db)

        await wait_for(settled, SETTLE_SECONDS, "every event applied (or one dead-lettered)",
                       *roles)  # fmt: skip
        dead = records(worker, "event dead-lettered")
        assert not dead, f"{len(dead)} healthy events dead-lettered, e.g. {dead[0]}"
        await wait_for(lambda: all_dispatched(db, stream.written), SETTLE_SECONDS,
                       "every event marked dispatched", *roles)  # fmt: skip
        await stop_all(*roles)
        await assert_each_applied_once(db, set(stream.written))
    finally:
        await database.close()


# -- 5. a poison message ---------------------------------------------------------------------


async def allot(fleet: Fleet, *args: str) -> str:
    """`allot <args>`, a one-shot command (through the harness); its output once it exited 0."""
    cli = start(fleet, *args)
    await wait_for(lambda: not cli.alive, 90, f"`allot {' '.join(args)}` done")
    assert cli.process.returncode == 0, cli.output
    return cli.output


async def dead_letters(fleet: Fleet) -> int:
    """Messages waiting in the harness group's dead-letter queue."""
    connection = await aio_pika.connect(fleet.broker_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(fleet.topology.dead_queue(GROUP), passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def test_a_poison_message_is_retried_dead_lettered_and_replayed_while_the_rest_flows(
    outages: Fleet, fleet_db: Database
) -> None:
    db = fleet_db
    relay = start(outages, "relay")
    workers = [start(outages, "worker", "--consumers", GROUP) for _ in range(2)]
    roles = (relay, *workers)
    await started(relay, *workers)
    healthy = await publish_pings(db, 100)
    [poison] = await publish_pings(db, 1, poison=True)
    healthy += await publish_pings(db, 100)
    healthy += await publish_pings(db, 100)

    def of_poison(event: str) -> list[dict[str, Any]]:
        return [r for w in workers for r in records(w, event) if r["event_id"] == poison]

    async def healthy_applied() -> bool:
        return set(healthy) <= set(await effects(db))

    await wait_for(lambda: bool(of_poison("event dead-lettered")), SETTLE_SECONDS,
                   "the poison dead-lettered", *roles)  # fmt: skip
    await wait_for(healthy_applied, SETTLE_SECONDS, "the rest applied", *roles)
    # Tried MAX_ATTEMPTS times (the first, then retries after a backoff), then given up.
    assert sorted(r["attempt"] for r in of_poison("event handler failed")) == list(
        range(1, MAX_ATTEMPTS + 1)
    )
    assert [r["attempts"] for r in of_poison("event dead-lettered")] == [MAX_ATTEMPTS]
    assert poison not in await effects(db)

    listed = await allot(outages, "events", "dlq", "list")  # every group's dead letters
    rows = [line.split("\t") for line in listed.splitlines() if line.count("\t") == 6]
    assert rows[0] == ["Group", "Event", "Type", "Consumer", "Attempts", "Last failure", "Error"]
    [[group, event_id, event_type, consumer, attempts, _, error]] = rows[1:]
    assert (group, event_id, event_type, consumer) == (GROUP, poison, PING, CONSUMER)
    assert attempts == str(MAX_ATTEMPTS)
    assert error.startswith("Poisoned: cannot handle poison pill")

    async with db.transaction() as session:  # the operator fixes the cause
        await session.execute(text("INSERT INTO outage_cure DEFAULT VALUES"))
    replayed = await allot(outages, "events", "dlq", "replay", poison)
    assert "Replayed 1 dead letter(s)." in replayed
    await wait_for(lambda: all_applied(db), SETTLE_SECONDS, "the poison applied", *roles)
    await stop_all(*roles)
    await assert_each_applied_once(db, {poison, *healthy})
    assert await dead_letters(outages) == 0
