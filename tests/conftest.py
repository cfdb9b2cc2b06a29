"""Shared fixtures. Every test that touches the database runs on each backend in
`ALLOT_TEST_BACKENDS` (default "sqlite,postgresql").

PostgreSQL, RabbitMQ and Redis: under CI=true each must be reachable (its tests fail otherwise);
elsewhere, if one is not, its tests are skipped and ONE loud line per service says so at the end
of the run. RabbitMQ and Redis tests isolate themselves with `service_namespace` (a unique prefix
for exchanges, queues and keys), never by touching the machine's own service state.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import create_async_engine

from allot.app import create_app, load_contexts
from allot.kernel.clock import ManualClock, set_clock
from allot.kernel.config import Settings
from allot.kernel.db.base import Base
from allot.kernel.db.engine import Database

load_contexts()

PG_ADMIN_URL = os.environ.get(
    "ALLOT_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BACKENDS = [
    b.strip() for b in os.environ.get("ALLOT_TEST_BACKENDS", "sqlite,postgresql").split(",") if b
]

_pg_state: dict[str, Any] = {"checked": False, "ok": False, "error": "", "skipped": 0}

RABBITMQ_URL = os.environ.get("ALLOT_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("ALLOT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# service name -> (reachable, error); probed once per process with a plain TCP connect.
_service_state: dict[str, tuple[bool, str]] = {}


def _postgres_reachable() -> bool:
    if not _pg_state["checked"]:
        _pg_state["checked"] = True

        async def probe() -> None:
            engine = create_async_engine(PG_ADMIN_URL)
            try:
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            finally:
                await engine.dispose()

        try:
            asyncio.run(asyncio.wait_for(probe(), timeout=5))
            _pg_state["ok"] = True
        except Exception as exc:
            _pg_state["error"] = f"{type(exc).__name__}: {exc}"
    return bool(_pg_state["ok"])


def _tcp_reachable(url: str, default_port: int) -> tuple[bool, str]:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 3
        ):
            return True, ""
    except OSError as exc:
        return False, f"{type(exc).__name__}: {exc}"


def _require_service(name: str, url: str, default_port: int) -> str:
    """The service's URL; fails the test under CI when it is unreachable, skips it elsewhere."""
    if name not in _service_state:
        _service_state[name] = _tcp_reachable(url, default_port)
    reachable, error = _service_state[name]
    if not reachable:
        if IN_CI:
            pytest.fail(f"CI=true but {name} is unreachable at {url}: {error}")
        pytest.skip(f"{name} unreachable")
    return url


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    return _require_service("RabbitMQ", RABBITMQ_URL, 5672)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _require_service("Redis", REDIS_URL, 6379)


@pytest.fixture
def service_namespace(request: pytest.FixtureRequest) -> str:
    """A prefix no other test (or parallel run) uses: for exchanges, queues and Redis keys."""
    from uuid import uuid4

    test = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    return f"t-{os.getpid()}-{uuid4().hex[:8]}-{test}"


def _worker_database_name() -> str:
    # Unique per process: parallel pytest runs (xdist workers, or two people on one machine)
    # must never truncate each other's tables.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"allot_test_{re.sub(r'[^a-z0-9_]', '_', worker.lower())}_{os.getpid()}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A per-xdist-worker PostgreSQL database with the schema created once."""
    if not _postgres_reachable():
        if IN_CI:
            pytest.fail(f"CI=true but PostgreSQL is unreachable: {_pg_state['error']}")
        _pg_state["skipped"] += 1
        pytest.skip("PostgreSQL unreachable")
    name = _worker_database_name()
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    url = f"{base}/{name}"

    async def create() -> None:
        admin = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        await admin.dispose()
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        await engine.dispose()

    asyncio.run(create())
    yield url

    async def drop() -> None:
        admin = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()

    asyncio.run(drop())


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite+aiosqlite:///{tmp_path / 'allot.sqlite3'}"


async def _reset_postgres(database: Database) -> None:
    tables = ", ".join(f'"{t.name}"' for t in reversed(Base.metadata.sorted_tables))
    async with database.write_engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url, pool_size=5)
    if database.is_sqlite:
        async with database.write_engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
    else:
        await _reset_postgres(database)
    yield database
    await database.dispose()


@pytest.fixture
def clock() -> Iterator[ManualClock]:
    """The process clock, frozen; move it with `clock.advance(seconds)`."""
    manual = ManualClock()
    previous = set_clock(manual)
    yield manual
    set_clock(previous)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        environment="test",
        data_dir=tmp_path,
        database_url=database_url,
        secret_key="test-secret-key-not-for-production",  # type: ignore[arg-type]
        run_background_workers=False,
        log_json=True,
    )


@pytest.fixture
def app(settings: Settings, database: Database) -> Any:
    return create_app(settings, database, run_background=False)


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


class QueryCounter:
    def __init__(self) -> None:
        self.statements: list[str] = []

    @property
    def count(self) -> int:
        return len(self.statements)


@contextmanager
def count_queries(database: Database) -> Iterator[QueryCounter]:
    """Counts SQL statements on both engines (query budgets: no N+1 on list endpoints)."""
    counter = QueryCounter()

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "PRAGMA", "SAVEPOINT", "RELEASE")):
            counter.statements.append(statement)

    engines = {database.write_engine.sync_engine, database.read_engine.sync_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield counter
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _pg_state["checked"] and not _pg_state["ok"] and not IN_CI:
        terminalreporter.write_line(
            f"!!! PostgreSQL UNREACHABLE ({_pg_state['error']}): its test variants were SKIPPED. "
            "They run (and must pass) in CI.",
            red=True,
            bold=True,
        )
    if not IN_CI:
        for name, (reachable, error) in _service_state.items():
            if not reachable:
                terminalreporter.write_line(
                    f"!!! {name} UNREACHABLE ({error}): its tests were SKIPPED. "
                    "They run (and must pass) in CI.",
                    red=True,
                    bold=True,
                )
