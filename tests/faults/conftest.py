"""Fault tests: real `allot` role processes on real PostgreSQL, RabbitMQ and Redis, killed with
SIGKILL and started again while work flows.

Fixtures (names and signatures are stable; tests/faults/test_outages.py may use them too):

- `fleet_database_url` -> str: a scratch PostgreSQL database of this test, migrated to head with
  `allot migrate`'s own code, holding `fleet_harness.TABLES` (`faults_effects`); dropped at the
  end. A test with tables of its own creates them with `create_tables(url, statements)` before
  it starts a role.
- `fleet` -> `Fleet`: starts role processes (`fleet.start("worker", "--consumers", "leads")`,
  `fleet.start("api")` picks a free port) through `python -m <fleet.harness> <role> ...`, with
  ALLOT_DATABASE_URL = `fleet_database_url`, ALLOT_BROKER_URL = `rabbitmq_url`,
  ALLOT_BROKER_NAMESPACE = ALLOT_REDIS_NAMESPACE = `service_namespace`, ALLOT_REDIS_URL =
  `redis_url`; keyword arguments override any setting for that process (`broker_url=...`
  through a proxy), and a restart (`fleet.restart(role)`) keeps them. Set `fleet.harness` (and
  add your consumer groups to `fleet.groups`) before the first start to run another harness.
  Afterwards every process still running is killed, and the RabbitMQ exchanges and queues of
  the namespace (the application's groups, ordered or not, and `fleet.groups`) and the Redis keys
  under `<namespace>:` are deleted. Every process also gets ALLOT_DATABASE_POOL_SIZE=4 (six
  processes share PostgreSQL's 100 connections with everyone's tests) and one ALLOT_SECRET_KEY.
  (No shortened outbox lease: a restarted relay, the leader, does not wait out the lease of the
  one killed.) A `Role` has
  `await started()` (API: /readyz answers; others: the "started" line), `await consuming()` (a
  broker worker subscribed), `kill9()`, `await stop()` (SIGTERM; the exit code), `pid`,
  `base_url`, `tail()`.
- `fleet_db` -> `Database`: the test's own pool on that database (its event loop).

Helpers: `wait_for(condition, seconds, what, *watched)` polls a condition (sync or async) until
a deadline and fails early, with the log, if a watched process exits; `LeadPusher` sends leads
through HTTP from concurrent clients and records every answer; `admin_token(url)` makes an
admin user and an API token with identity's own service (as `allot users create` and `allot
tokens create` do). Nothing here synchronises by sleeping: sleeps are polling intervals only.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import httpx
import pytest
import redis
from sqlalchemy import text

from allot.kernel import migrations
from allot.kernel.config import Settings
from allot.kernel.db.engine import Database
from allot.kernel.events import ConsumerRegistry, registry
from allot.kernel.events.broker import Topology
from tests.architecture.boundaries import REPO_ROOT
from tests.faults import fleet_harness
from tests.kernel.broker.conftest import delete_topology
from tests.local_servers import free_port
from tests.test_migrations import scratch_postgres_database

START_SECONDS = 90.0  # a cold interpreter importing every context, on a busy 2-core machine
STOP_SECONDS = 60.0
POLL_SECONDS = 0.05
STARTED = '"event": "allot process started"'
STOPPED = '"event": "allot process stopped"'
SERVING = '"event": "Uvicorn running on'
CONSUMING = '"event": "worker consuming"'
# The outbox lease a killed relay leaves behind (see fleet_harness): long enough for any round
# of a live relay on a loaded machine, short enough not to dominate the test.


def create_tables(url: str, statements: Sequence[str]) -> None:
    async def run() -> None:
        database = Database(url, pool_size=1)
        try:
            async with database.transaction() as session:
                for statement in statements:
                    await session.execute(text(statement))
        finally:
            await database.dispose()

    asyncio.run(run())


@pytest.fixture
def fleet_database_url() -> Iterator[str]:
    with scratch_postgres_database("faults") as url:
        migrations.upgrade(url)
        create_tables(url, fleet_harness.TABLES)
        yield url


@pytest.fixture
async def fleet_db(fleet_database_url: str) -> AsyncIterator[Database]:
    database = Database(fleet_database_url, pool_size=3)
    yield database
    await database.dispose()


class Role:
    """One `allot <role>` process; its output goes to a file of its own."""

    def __init__(
        self, fleet: Fleet, role: str, args: list[str], settings: dict[str, str], index: int
    ) -> None:
        self.fleet = fleet
        self.role = role
        self.args = args
        self.settings = settings
        self.name = f"{role}-{index}"
        self.log = fleet.directory / f"{self.name}.log"
        self.port = int(args[args.index("--port") + 1]) if "--port" in args else None
        env = {**fleet.env, **{f"ALLOT_{k.upper()}": str(v) for k, v in settings.items()}}
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", fleet.harness, role, *args],
                cwd=fleet.directory,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.killed = False
        self.cpu = 0.0  # CPU seconds used, recorded when it was stopped or killed

    def __repr__(self) -> str:
        return f"<{self.name} pid {self.pid}>"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        assert self.port is not None, f"{self.name} serves no HTTP"
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output.splitlines()[-lines:])

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    async def started(self, seconds: float = START_SECONDS) -> Role:
        """Wait until it serves: the "started" log line of a background role; for the API,
        uvicorn's "running" line, then /readyz answering 200 (the log is polled, not the port: a
        client per poll costs more CPU than the start-up it waits for)."""
        if self.role not in ("api", "serve"):
            await wait_for(lambda: STARTED in self.output, seconds, f"{self.name} started", self)
            return self
        await wait_for(lambda: SERVING in self.output, seconds, f"{self.name} serving", self)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5) as http:

            async def ready() -> bool:
                with contextlib.suppress(httpx.TransportError):
                    return (await http.get("/readyz")).status_code == 200
                return False

            await wait_for(ready, seconds, f"{self.name} ready", self)
        return self

    async def consuming(self, seconds: float = START_SECONDS) -> Role:
        """A broker-mode worker: wait until it consumes its queues (its "started" line comes
        before it has connected, which happens in the background)."""
        await self.started(seconds)
        await wait_for(lambda: CONSUMING in self.output, seconds, f"{self.name} consuming", self)
        return self

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (0 once it has been reaped)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill9(self) -> None:
        """SIGKILL: no drain, no cleanup; the kernel closes its sockets."""
        assert self.alive, f"{self.name} was not running:\n{self.tail()}"
        self.cpu = self.cpu_seconds()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.killed = True

    async def stop(self, seconds: float = STOP_SECONDS) -> int:
        """SIGTERM and wait for the exit; returns the exit code."""
        if not self.alive:
            return int(self.process.returncode)
        self.cpu = self.cpu_seconds()
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + seconds
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(
                    f"{self.name} did not exit within {seconds} s of SIGTERM:\n{self.tail()}"
                )
            await asyncio.sleep(POLL_SECONDS)
        return int(self.process.returncode)


@dataclass
class Fleet:
    directory: Path
    database_url: str
    broker_url: str
    redis_url: str
    namespace: str
    harness: str = "tests.faults.fleet_harness"
    # Consumer groups outside the application's registry (the harness's) whose queues to delete.
    groups: set[str] = field(default_factory=lambda: {fleet_harness.GROUP})
    roles: list[Role] = field(default_factory=list)

    @property
    def markers(self) -> Path:
        return self.directory / "markers"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALLOT_")}
        env.update(
            ALLOT_DATABASE_URL=self.database_url,
            ALLOT_ENVIRONMENT="test",
            ALLOT_SECRET_KEY="faults-test-secret-key-0123456789",
            ALLOT_DATA_DIR=str(self.directory / "var"),
            ALLOT_LOG_JSON="true",
            ALLOT_BROKER_URL=self.broker_url,
            ALLOT_BROKER_NAMESPACE=self.namespace,
            ALLOT_REDIS_URL=self.redis_url,
            ALLOT_REDIS_NAMESPACE=self.namespace,
            # Six processes share PostgreSQL's 100 connections with everyone's tests.
            ALLOT_DATABASE_POOL_SIZE="4",
            PYTHONPATH=str(REPO_ROOT),
        )
        env[fleet_harness.MARKERS_VARIABLE] = str(self.markers)
        return env

    @property
    def settings(self) -> Settings:
        return Settings(
            database_url=self.database_url,
            broker_url=self.broker_url,
            broker_namespace=self.namespace,
            redis_url=self.redis_url,
            redis_namespace=self.namespace,
        )

    @property
    def topology(self) -> Topology:
        return Topology.from_settings(self.settings)

    def start(self, role: str, *args: str, **settings: str) -> Role:
        """Start `allot <role> <args>`; returns at once (await `.started()`)."""
        arguments = list(args)
        if role in ("api", "serve") and "--port" not in arguments:
            arguments += ["--port", str(free_port())]
        started = Role(self, role, arguments, dict(settings), len(self.roles))
        self.roles.append(started)
        return started

    def cpu_report(self) -> str:
        """CPU seconds per role (every process of the role added up), for the test's summary."""
        used: dict[str, float] = {}
        for role in self.roles:
            used[role.role] = used.get(role.role, 0.0) + (role.cpu or role.cpu_seconds())
        return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in sorted(used.items()))

    def restart(self, role: Role) -> Role:
        """A new process with the same role, arguments (port included) and settings."""
        assert not role.alive, f"{role.name} is still running"
        return self.start(role.role, *role.args, **role.settings)

    async def queue_depths(self) -> dict[str, int]:
        """Ready messages in every queue of every consumer group (dead-letter queues too) that
        exists (nobody declared the others); only meaningful once no worker holds unacked
        messages."""
        topology = self.topology
        groups = sorted(set(_group_registry(self.groups).all_groups()))
        _, queues = topology.all_names(groups)
        depths: dict[str, int] = {}
        connection = await aio_pika.connect(self.broker_url)
        try:
            for name in queues:
                channel = await connection.channel()
                try:
                    queue = await channel.declare_queue(name, passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    continue  # the refusal closed the channel
                depths[name] = int(queue.declaration_result.message_count or 0)
                await channel.close()
        finally:
            await connection.close()
        return depths

    def cleanup(self) -> None:
        for role in self.roles:
            if role.alive:
                role.process.kill()
                role.process.wait(timeout=30)
        asyncio.run(delete_topology(self.broker_url, self.topology, _group_registry(self.groups)))
        client = redis.Redis.from_url(self.redis_url)
        try:
            keys = list(client.scan_iter(match=f"{self.namespace}:*", count=500))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


class _Groups(ConsumerRegistry):
    def all_groups(self) -> list[str]:
        return sorted({consumer.name.split(".", 1)[0] for consumer in self.all()})


async def _no_op(session: Any, event: Any) -> None:
    return None


def _group_registry(extra_groups: set[str]) -> _Groups:
    """The application's consumers plus one per extra group: what `delete_topology` needs to
    name every queue the relay and the workers may have declared."""
    groups = _Groups()
    for name in [consumer.name for consumer in registry.all()]:
        groups.subscribe(name, "any")(_no_op)
    for group in extra_groups:
        groups.subscribe(f"{group}.any", "any")(_no_op)
    return groups


@pytest.fixture
def fleet(
    tmp_path: Path,
    fleet_database_url: str,
    rabbitmq_url: str,
    redis_url: str,
    service_namespace: str,
) -> Iterator[Fleet]:
    built = Fleet(
        directory=tmp_path,
        database_url=fleet_database_url,
        broker_url=rabbitmq_url,
        redis_url=redis_url,
        namespace=service_namespace,
    )
    built.markers.mkdir()
    try:
        yield built
    finally:
        built.cleanup()


# -- waiting ---------------------------------------------------------------------------------


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]],
    seconds: float,
    what: str,
    *watched: Role,
) -> None:
    """Poll `condition` until it holds; fail after `seconds`, or as soon as a watched process
    has exited (with its log)."""
    deadline = time.monotonic() + seconds
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        for role in watched:
            code = role.process.poll()
            assert code is None, f"{role.name} exited ({code}) before {what}:\n{role.tail()}"
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        await asyncio.sleep(POLL_SECONDS)  # polling interval: the condition decides


async def scalar(database: Database, sql: str, **params: Any) -> Any:
    async with database.reader() as session:
        return (await session.execute(text(sql), params)).scalar()


async def rows(database: Database, sql: str, **params: Any) -> list[Any]:
    async with database.reader() as session:
        return list((await session.execute(text(sql), params)).all())


# -- identity and HTTP ------------------------------------------------------------------------


async def admin_token(database_url: str) -> str:
    """An admin user and an API token for it, made with identity's service in one unit of work
    as the CLI actor (what `allot users create --role admin` + `allot tokens create` run)."""
    from allot.cli.runtime import in_transaction
    from allot.contexts import identity

    async def work(session: Any) -> str:
        user = await identity.create_user(
            session, email="faults-admin@example.com", password="faults-password-123",
            roles=["admin"], display_name="Faults admin",
        )  # fmt: skip
        _, plaintext = await identity.issue_token(session, user_id=user.id, name="faults")
        return plaintext

    return await in_transaction(Settings(database_url=database_url), work)


def lead_body(external_id: str, n: int) -> dict[str, Any]:
    return {
        "source": "faults",
        "external_id": external_id,
        "customer": {"name": f"Client {n}", "phone": f"+7 912 {n // 10000:03d}-{n % 10000:04d}"},
    }


@dataclass
class LeadPusher:
    """Sends one lead per external id through `POST /api/v1/leads` from `clients` concurrent
    clients. Client i starts at `targets()[i % len]`; a request that fails (connection refused
    or cut, a 5xx) is sent again to the next target — the same body, so a lead whose first try
    was committed answers 409 with `existing_id`, which counts as created. When every target
    failed in a row the client polls until one answers (bounded by `seconds`).

    `hold(at, event)`: no client starts lead number `at` or later before `event` is set (a test
    keeps part of the stream for after a restart)."""

    targets: Callable[[], list[str]]
    token: str
    external_ids: list[str]
    clients: int = 8
    seconds: float = 240.0
    lead_ids: dict[str, str] = field(default_factory=dict)  # external id -> lead id
    statuses: dict[str, list[int | str]] = field(default_factory=dict)  # every try's outcome
    in_flight: int = 0
    in_flight_at: Counter[str] = field(default_factory=Counter)  # target -> requests open
    answered_by: Counter[str] = field(default_factory=Counter)  # target -> 201s and 409s
    _next: int = 0
    _holds: list[tuple[int, asyncio.Event]] = field(default_factory=list)

    def hold(self, at: int, event: asyncio.Event) -> None:
        self._holds.append((at, event))

    @property
    def answered(self) -> int:
        return len(self.lead_ids)

    @property
    def conflicts(self) -> int:
        return sum(1 for tries in self.statuses.values() if 409 in tries)

    @property
    def failed_tries(self) -> int:
        return sum(1 for tries in self.statuses.values() for t in tries if t not in (201, 409))

    @property
    def server_errors(self) -> list[int]:
        """5xx answers (a surviving process must never answer one because another died)."""
        return [
            t for tries in self.statuses.values() for t in tries if isinstance(t, int) and t >= 500
        ]

    async def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        headers = {"Authorization": f"Bearer {self.token}"}
        limits = httpx.Limits(max_connections=self.clients)
        async with httpx.AsyncClient(timeout=30, headers=headers, limits=limits) as http:
            await asyncio.gather(*(self._client(http, i, deadline) for i in range(self.clients)))

    async def _client(self, http: httpx.AsyncClient, index: int, deadline: float) -> None:
        while self._next < len(self.external_ids):
            n = self._next
            self._next += 1
            for at, event in self._holds:
                if n >= at:
                    await event.wait()
            await self._send(http, index, n, deadline)

    async def _send(self, http: httpx.AsyncClient, index: int, n: int, deadline: float) -> None:
        external_id = self.external_ids[n]
        tries = self.statuses.setdefault(external_id, [])
        attempt = 0
        while True:
            targets = self.targets()
            target = targets[(index + attempt) % len(targets)]
            self.in_flight += 1
            self.in_flight_at[target] += 1
            try:
                answer: httpx.Response | None = await http.post(
                    f"{target}/api/v1/leads", json=lead_body(external_id, n)
                )
            except httpx.TransportError as exc:
                answer, error = None, type(exc).__name__
            finally:
                self.in_flight -= 1
                self.in_flight_at[target] -= 1
            tries.append(error if answer is None else answer.status_code)
            if answer is not None and answer.status_code in (201, 409):
                self.lead_ids[external_id] = answer.json()[
                    "id" if answer.status_code == 201 else "existing_id"
                ]
                self.answered_by[target] += 1
                return
            if answer is not None and answer.status_code < 500:
                raise AssertionError(f"lead {external_id}: {answer.status_code} {answer.text}")
            attempt += 1
            assert time.monotonic() < deadline, f"lead {external_id} not taken in: {tries}"
            if attempt % len(targets) == 0:
                await asyncio.sleep(0.1)  # every target failed: poll until one is back


def new_external_ids(count: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"faults-{run}-{n:05d}" for n in range(count)]


@contextlib.contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    began = time.monotonic()
    try:
        yield
    finally:
        timings[name] = round(time.monotonic() - began, 1)
