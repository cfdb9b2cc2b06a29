"""Process roles (`allot api | worker | relay | timers`) as real processes on PostgreSQL.

The worker and timers processes run through tests/cli/roles_harness.py: the real `allot` CLI
with a test consumer and timer kind whose effects (outbox rows keyed by their cause) the tests
count. Nothing here waits by sleeping: every wait polls a condition against a deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from allot.kernel import migrations
from allot.kernel.clock import utcnow
from allot.kernel.config import Settings
from allot.kernel.db.engine import Database
from allot.kernel.events import ConsumerRegistry, OutboxEvent, publish, registry
from allot.kernel.events.broker import Topology
from allot.kernel.timers import Timer, schedule
from tests.architecture.boundaries import REPO_ROOT
from tests.cli.conftest import Invoke
from tests.kernel.broker.conftest import delete_topology
from tests.local_servers import free_port
from tests.test_migrations import scratch_postgres_database

START_SECONDS = 60  # a cold interpreter importing every context, on a busy 2-core machine
STARTED = '"event": "allot process started"'
STOPPED = '"event": "allot process stopped"'


@pytest.fixture
def pg_url() -> Iterator[str]:
    """An empty PostgreSQL database migrated to head with `allot migrate`'s own code."""
    with scratch_postgres_database("roles") as url:
        migrations.upgrade(url)
        yield url


class RoleProcess:
    """`allot <args>` (through the harness) in a subprocess; its stderr goes to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._log_file = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.cli.roles_harness", *args],
            cwd=log.parent,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    @property
    def output(self) -> str:
        return self.log.read_text()

    def wait_for_line(self, text: str, seconds: float = START_SECONDS) -> None:
        wait_until(lambda: text in self.output, seconds, f"{text!r} in the log", self)

    def stop(self, seconds: float = 60) -> tuple[int, float]:
        """SIGTERM, then wait; returns (exit code, seconds it took to exit)."""
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"did not exit within {seconds} s of SIGTERM:\n{self.output}")
        return code, time.monotonic() - began

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self._log_file.close()


def wait_until(
    condition: Callable[[], bool], seconds: float, what: str, *watched: RoleProcess
) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        for role in watched:
            code = role.process.poll()
            assert code is None, f"exited ({code}) before {what}:\n{role.output}"
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.05)  # polling interval, not synchronisation: the condition decides


@pytest.fixture
def start_role(tmp_path: Path, pg_url: str) -> Iterator[Callable[..., RoleProcess]]:
    started: list[RoleProcess] = []
    markers = tmp_path / "markers"
    markers.mkdir()

    def start(*args: str, **settings: str) -> RoleProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALLOT_")}
        env.update(
            ALLOT_DATABASE_URL=pg_url,
            ALLOT_ENVIRONMENT="test",
            ALLOT_DATA_DIR=str(tmp_path / "var"),
            ALLOT_LOG_JSON="true",
            ROLES_HARNESS_MARKERS=str(markers),
            PYTHONPATH=str(REPO_ROOT),
        )
        env.update({f"ALLOT_{name.upper()}": value for name, value in settings.items()})
        role = RoleProcess(list(args), env, tmp_path / f"{args[0]}-{len(started)}.log")
        started.append(role)
        return role

    yield start
    for role in started:
        role.kill()


def markers_of(tmp_path: Path, kind: str) -> set[str]:
    return {p.name.removeprefix(f"{kind}-") for p in (tmp_path / "markers").glob(f"{kind}-*")}


def in_database(url: str, work: Callable[[Any], Any]) -> Any:
    async def run() -> Any:
        database = Database(url, pool_size=1)
        try:
            async with database.transaction() as session:
                return await work(session)
        finally:
            await database.dispose()

    return asyncio.run(run())


def publish_pings(url: str, count: int, seconds: float = 0) -> list[str]:
    async def work(session: Any) -> list[str]:
        return [
            str(await publish(session, type="rolestest.ping", aggregate_type="rolestest",
                              aggregate_id=str(n), payload={"seconds": seconds}))
            for n in range(count)
        ]  # fmt: skip

    return list(in_database(url, work))


def effects(url: str, event_type: str) -> Counter[str]:
    """How many effect rows each cause (event or timer id) has."""

    async def work(session: Any) -> Counter[str]:
        rows = await session.execute(
            select(OutboxEvent.aggregateid, func.count())
            .where(OutboxEvent.type == event_type)
            .group_by(OutboxEvent.aggregateid)
        )
        return Counter(dict(rows.all()))

    return Counter(in_database(url, work))


def statuses(url: str, ids: list[str]) -> Counter[str]:
    async def work(session: Any) -> Counter[str]:
        wanted = [uuid.UUID(i) for i in ids]
        rows = await session.execute(select(OutboxEvent.status).where(OutboxEvent.id.in_(wanted)))
        return Counter(rows.scalars().all())

    return Counter(in_database(url, work))


def effect_pids(url: str, event_type: str) -> Counter[int]:
    async def work(session: Any) -> Counter[int]:
        rows = await session.execute(
            select(OutboxEvent.payload).where(OutboxEvent.type == event_type)
        )
        return Counter(payload["pid"] for payload in rows.scalars())

    return Counter(in_database(url, work))


# -- timers ----------------------------------------------------------------------------------


def test_two_timers_processes_fire_each_due_timer_exactly_once(
    pg_url: str, start_role: Callable[..., RoleProcess]
) -> None:
    runners = [start_role("timers"), start_role("timers")]
    for runner in runners:
        runner.wait_for_line(STARTED)
    due = 200

    async def schedule_due(session: Any) -> list[str]:
        # Each handler takes 5 ms, so the two runners' rounds overlap and contend for rows.
        now = utcnow() - timedelta(seconds=1)
        return [
            str(await schedule(session, "rolestest.tick", now, {"seconds": 0.005}))
            for _ in range(due)
        ]

    timer_ids = in_database(pg_url, schedule_due)
    wait_until(lambda: sum(effects(pg_url, "rolestest.fired").values()) >= due, 120,
               f"{due} timers fired", *runners)  # fmt: skip

    for runner in runners:
        code, _ = runner.stop()
        assert code == 0, runner.output
        assert STOPPED in runner.output
    fired = effects(pg_url, "rolestest.fired")
    assert set(fired) == set(timer_ids)
    assert set(fired.values()) == {1}, "a timer fired more than once"
    # Both processes took part (the race was real), and every timer is marked fired.
    assert set(effect_pids(pg_url, "rolestest.fired")) == {r.process.pid for r in runners}

    async def timer_statuses(session: Any) -> Counter[str]:
        return Counter((await session.execute(select(Timer.status))).scalars().all())

    assert in_database(pg_url, timer_statuses) == Counter({"fired": due})


# -- worker without a broker -----------------------------------------------------------------


def test_two_workers_without_a_broker_drain_the_outbox_once(
    pg_url: str, start_role: Callable[..., RoleProcess]
) -> None:
    workers = [start_role("worker"), start_role("worker")]
    for worker in workers:
        worker.wait_for_line(STARTED)
    assert '"groups": "all"' in workers[0].output
    ids = publish_pings(pg_url, 500)

    wait_until(lambda: statuses(pg_url, ids) == Counter({"dispatched": len(ids)}), 120,
               "every event dispatched", *workers)  # fmt: skip

    counted = effects(pg_url, "rolestest.effect")
    assert set(counted) == set(ids)
    assert set(counted.values()) == {1}
    for worker in workers:
        code, _ = worker.stop()
        assert code == 0, worker.output


def test_sigterm_drains_the_work_in_flight_and_loses_nothing(
    tmp_path: Path, pg_url: str, start_role: Callable[..., RoleProcess]
) -> None:
    worker = start_role("worker")
    worker.wait_for_line(STARTED)
    # One claimed batch of 10 events taking 0.5 s each: SIGTERM lands in the middle of it.
    in_flight = publish_pings(pg_url, 10, seconds=0.5)
    wait_until(lambda: bool(markers_of(tmp_path, "event")), 60, "a handler running", worker)
    later = publish_pings(pg_url, 10)  # committed while the worker is busy: not claimed yet
    assert statuses(pg_url, in_flight) == Counter({"pending": 10}), "the batch ended too soon"

    code, took = worker.stop()
    assert code == 0, worker.output
    assert took < 30, f"draining took {took:.1f} s"
    assert STOPPED in worker.output
    assert '"signal": "SIGTERM"' in worker.output
    # The batch in flight was finished and committed, not abandoned to its claim's expiry.
    assert statuses(pg_url, in_flight) == Counter({"dispatched": 10})
    assert set(effects(pg_url, "rolestest.effect")) >= set(in_flight)

    # Nothing lost: the next worker takes whatever was left, and no effect happens twice.
    restarted = start_role("worker")
    wait_until(lambda: statuses(pg_url, later) == Counter({"dispatched": 10}), 60,
               "the rest dispatched", restarted)  # fmt: skip
    counted = effects(pg_url, "rolestest.effect")
    assert set(counted) == set(in_flight) | set(later)
    assert set(counted.values()) == {1}
    code, _ = restarted.stop()
    assert code == 0, restarted.output


def test_timers_sigterm_finishes_the_timer_being_fired(
    tmp_path: Path, pg_url: str, start_role: Callable[..., RoleProcess]
) -> None:
    runner = start_role("timers")
    runner.wait_for_line(STARTED)

    async def schedule_slow(session: Any) -> list[str]:
        due = utcnow() - timedelta(seconds=1)
        return [str(await schedule(session, "rolestest.tick", due, {"seconds": 0.3}))
                for _ in range(5)]  # fmt: skip

    timer_ids = in_database(pg_url, schedule_slow)
    wait_until(lambda: bool(markers_of(tmp_path, "timer")), 60, "a timer firing", runner)
    code, _ = runner.stop()
    assert code == 0, runner.output
    # The round in flight ran to its end: every timer it had started is fired, once.
    started = markers_of(tmp_path, "timer")
    fired = effects(pg_url, "rolestest.fired")
    assert started <= set(fired)
    assert set(fired) <= set(timer_ids)
    assert set(fired.values()) == {1}


# -- broker mode -----------------------------------------------------------------------------


@pytest.fixture
def broker(rabbitmq_url: str, service_namespace: str) -> Iterator[dict[str, str]]:
    """Settings for broker mode under the test's own namespace; afterwards every exchange and
    queue of that namespace (the contexts' groups and the harness's) is deleted."""
    yield {
        "broker_url": rabbitmq_url,
        "broker_namespace": service_namespace,
        "broker_relay_poll_seconds": "0.05",
    }
    groups = ConsumerRegistry()  # the harness's consumer joins the contexts' ones there
    for name in [consumer.name for consumer in registry.all()] + ["rolestest.count"]:
        groups.subscribe(name, "any")(_no_op)
    settings = Settings(broker_namespace=service_namespace, broker_url=rabbitmq_url)
    asyncio.run(delete_topology(rabbitmq_url, Topology.from_settings(settings), groups))


async def _no_op(session: Any, event: Any) -> None:
    return None


def test_relay_and_workers_of_one_group_apply_every_event_once(
    pg_url: str, broker: dict[str, str], start_role: Callable[..., RoleProcess]
) -> None:
    relay = start_role("relay", **broker)
    relay.wait_for_line(STARTED)  # the relay declares every group's queue before publishing
    workers = [start_role("worker", "--consumers", "rolestest", **broker) for _ in range(2)]
    for worker in workers:
        worker.wait_for_line(STARTED)
    assert '"groups": ["rolestest"]' in workers[0].output
    ids = publish_pings(pg_url, 300)

    wait_until(lambda: sum(effects(pg_url, "rolestest.effect").values()) >= len(ids), 120,
               "every event applied", relay, *workers)  # fmt: skip
    for role in (relay, *workers):
        code, _ = role.stop()
        assert code == 0, role.output
    counted = effects(pg_url, "rolestest.effect")
    assert set(counted) == set(ids)
    assert set(counted.values()) == {1}
    assert statuses(pg_url, ids) == Counter({"dispatched": len(ids)})  # confirmed, then marked


def test_serve_in_broker_mode_runs_relay_worker_and_timers_on_its_own(
    pg_url: str, broker: dict[str, str], start_role: Callable[..., RoleProcess]
) -> None:
    port = free_port()
    serve = start_role("serve", "--port", str(port), **broker)
    wait_until(lambda: "Application startup complete" in serve.output, START_SECONDS,
               "the server started", serve)  # fmt: skip
    ids = publish_pings(pg_url, 50)

    async def schedule_one(session: Any) -> str:
        return str(await schedule(session, "rolestest.tick", utcnow() - timedelta(seconds=1)))

    timer_id = in_database(pg_url, schedule_one)
    wait_until(lambda: set(effects(pg_url, "rolestest.effect")) == set(ids)
               and timer_id in effects(pg_url, "rolestest.fired"), 120,
               "every event applied and the timer fired", serve)  # fmt: skip
    code, _ = serve.stop()
    assert code == 0, serve.output
    assert set(effects(pg_url, "rolestest.effect").values()) == {1}


# -- api -------------------------------------------------------------------------------------


def test_api_serves_http_and_exits_cleanly_on_sigterm(
    pg_url: str, start_role: Callable[..., RoleProcess]
) -> None:
    port = free_port()
    # The API never talks to the broker: one that is down must not make it "not ready".
    api = start_role("api", "--port", str(port), broker_url="amqp://guest:guest@127.0.0.1:1/")
    answers: list[httpx.Response] = []

    def ready() -> bool:
        try:
            answers.append(httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2))
        except httpx.TransportError:
            return False
        return True

    wait_until(ready, START_SECONDS, "an answer from /readyz", api)
    assert answers[-1].status_code == 200
    assert answers[-1].json()["checks"] == {"database": "ok"}
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json() == {"status": "ok"}

    code, took = api.stop()
    assert code == 0, api.output
    assert took < 30


# -- refusals --------------------------------------------------------------------------------


def test_relay_without_a_broker_url_exits_1_with_the_reason(
    pg_url: str, start_role: Callable[..., RoleProcess]
) -> None:
    relay = start_role("relay")
    assert relay.process.wait(timeout=START_SECONDS) == 1
    assert "`allot relay` publishes the outbox to RabbitMQ: set ALLOT_BROKER_URL" in relay.output
    assert "Traceback" not in relay.output


def test_background_roles_refuse_a_schema_that_is_behind(
    cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    with scratch_postgres_database("roles_behind") as url:
        monkeypatch.setenv("ALLOT_DATABASE_URL", url)
        monkeypatch.setenv("ALLOT_BROKER_URL", "amqp://guest:guest@127.0.0.1:1/")  # not reached
        for role in ("worker", "relay", "timers"):
            result = cli(role)
            assert result.exit_code == 1, result.output
            assert "run `allot migrate` first" in result.output
        result = cli("api", "--port", "1")
        assert result.exit_code == 1, result.output
        assert "allot migrate" in result.output
        assert migrations.current(url) is None  # nothing migrated it behind the operator's back


def test_serve_refuses_several_processes_in_broker_mode(
    cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each process of `serve` would run its own relay; order per client needs exactly one.
    monkeypatch.setenv("ALLOT_DATABASE_URL", "postgresql+asyncpg://u@127.0.0.1:1/nowhere")
    monkeypatch.setenv("ALLOT_BROKER_URL", "amqp://guest:guest@127.0.0.1:1/")
    result = cli("serve", "--workers", "2")
    assert result.exit_code == 1
    assert "would run N outbox relays" in result.output


@pytest.mark.parametrize("role", ["api", "worker", "relay", "timers"])
def test_split_roles_refuse_sqlite(cli: Invoke, monkeypatch: pytest.MonkeyPatch, role: str) -> None:
    monkeypatch.setenv("ALLOT_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
    result = cli(role)
    assert result.exit_code == 1, result.output
    assert f"`allot {role}` needs PostgreSQL" in result.output


def test_worker_consumer_groups_are_checked(cli: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOT_DATABASE_URL", "postgresql+asyncpg://u@127.0.0.1:1/nowhere")
    result = cli("worker", "--consumers", "routing")
    assert result.exit_code == 1
    assert "--consumers needs broker mode" in result.output

    monkeypatch.setenv("ALLOT_BROKER_URL", "amqp://guest:guest@127.0.0.1:1/")
    result = cli("worker", "--consumers", "routing,nosuch")
    assert result.exit_code == 1
    # The known groups, as the registry has them: each consumer name up to its first dot.
    from allot.kernel.events import registry

    known = sorted({consumer.name.split(".")[0] for consumer in registry.all()})
    assert "routing" in known
    assert f"unknown consumer group(s): nosuch; known groups: {', '.join(known)}" in (
        result.output.replace("\n", "")
    )


def test_the_start_line_masks_passwords_and_the_heartbeat_lives_as_long_as_the_process(
    tmp_path: Path, pg_url: str, start_role: Callable[..., RoleProcess]
) -> None:
    # PostgreSQL here trusts local connections, so a password in the URL is accepted unused.
    with_password = pg_url.replace("postgres@", "postgres:db-s3cret@", 1)
    heartbeat = tmp_path / "heartbeat"
    runner = start_role("timers", database_url=with_password, heartbeat_file=str(heartbeat),
                        broker_url="amqp://guest:mq-s3cret@127.0.0.1:5672/")  # fmt: skip
    runner.wait_for_line(STARTED)
    wait_until(heartbeat.exists, 30, "a heartbeat file", runner)
    code, _ = runner.stop()
    assert code == 0
    assert "s3cret" not in runner.output
    assert "postgres:***@" in runner.output
    assert "guest:***@" in runner.output
    assert not heartbeat.exists()  # a stopped process leaves no fresh-looking heartbeat behind
