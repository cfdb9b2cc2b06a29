"""Shared bits for benchmarks: machine description, percentiles, database set-up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from allot.app import create_app, load_contexts
from allot.contexts import identity
from allot.contexts.routing import agent_service, queue_service
from allot.contexts.routing.schemas import AgentCreate, QueueCreate
from allot.kernel.config import Settings
from allot.kernel.db.base import Base
from allot.kernel.db.engine import Database

PG_ADMIN = os.environ.get(
    "ALLOT_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError):
        pass
    sqlite = subprocess.run(
        ["python3", "-c", "import sqlite3; print(sqlite3.sqlite_version)"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (
        f"{os.cpu_count()} cores ({cpu}){memory}; Python {platform.python_version()}; "
        f"SQLite {sqlite}"
    )


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    if not ordered:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": cuts[49], "p90": cuts[89], "p99": cuts[98], "max": ordered[-1]}


async def fresh_database(backend: str, workdir: Path) -> Database:
    """An empty schema on SQLite (a new file) or PostgreSQL (a new database `allot_bench`)."""
    load_contexts()
    if backend == "sqlite":
        path = workdir / "bench.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        url = f"sqlite+aiosqlite:///{path}"
    else:
        admin = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(text('DROP DATABASE IF EXISTS "allot_bench" WITH (FORCE)'))
            await conn.execute(text('CREATE DATABASE "allot_bench"'))
        await admin.dispose()
        url = PG_ADMIN.rsplit("/", 1)[0] + "/allot_bench"
    database = Database(url, pool_size=20)
    async with database.write_engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    return database


AGENTS = 20


async def loans_desk(session: AsyncSession, *, agents: int, capacity: int) -> None:
    """A direct-mode queue of the agents with the skill "loans", and `agents` available ones."""
    await queue_service.create_queue(
        session, QueueCreate(name="leads", member_expression='"loans" in skills')
    )
    for n in range(agents):
        await agent_service.create_agent(
            session,
            AgentCreate(name=f"agent {n}", capacity=capacity, skills=["loans"], status="available"),
        )


async def prepare(database: Database) -> str:
    """`loans_desk` with AGENTS agents of capacity 1,000 and an admin; returns the admin's
    bearer token."""
    async with database.transaction() as session:
        await loans_desk(session, agents=AGENTS, capacity=1000)
        admin = await identity.create_user(
            session, email="bench@example.com", password="x" * 12, roles=["admin"]
        )
        _token_id, token = await identity.issue_token(session, user_id=admin.id, name="bench")
    return token


@contextlib.asynccontextmanager
async def inprocess_app(backend: str, *, background: bool = True) -> AsyncIterator[tuple[Any, str]]:
    """(app, bearer token) on a fresh database prepared by `prepare`, for `asgi_request`; with
    `background` the app's lifespan runs (dispatcher, timers, WAL checkpoints) as under
    `allot serve`. The database is disposed of at the end."""
    workdir = Path(tempfile.mkdtemp(prefix="allot-bench-"))
    database = await fresh_database(backend, workdir)
    settings = Settings(
        data_dir=workdir,
        secret_key="x" * 32,  # type: ignore[arg-type]
        database_url=database.url,
        run_background_workers=background,
        log_level="WARNING",
        api_rate_limit="",  # one token sends everything: not a client to throttle here
    )
    app = create_app(settings, database, run_background=background)
    token = await prepare(database)
    lifespan = app.router.lifespan_context(app) if background else contextlib.nullcontext()
    try:
        async with lifespan:
            yield app, token
    finally:
        await database.dispose()


async def asgi_request(
    app: Any, token: str, method: str, target: str, body: Any = None
) -> tuple[int, bytes]:
    """One request straight into the ASGI app, no server, no sockets, no HTTP client (httpx's
    ASGI transport alone costs more than the request): (status, body)."""
    raw = json.dumps(body).encode() if body is not None else b""
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-length", str(len(raw)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
    }
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    status = 0
    parts: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(parts)


async def post_leads(
    app: Any, token: str, numbers: range, clients: int, tag: str
) -> dict[str, float]:
    """POST a lead for each of `numbers` from `clients` concurrent loops straight into the ASGI
    app; a lead counts as placed only when the answer is 201 with an `assignee_id` (assigned,
    not merely accepted). Also returns this process's CPU time per lead (all its threads)."""
    latencies: list[float] = []
    placed = failed = 0
    pending = iter(numbers)

    async def client_loop() -> None:
        nonlocal placed, failed
        for n in pending:
            lead = {
                "source": "bench",
                "external_id": f"{tag}-{n}",
                "customer": {"name": f"Клиент {n}", "phone": f"+7912{n % 10_000_000:07d}"},
                "priority": n % 3,
            }
            started = time.perf_counter()
            status, body = await asgi_request(app, token, "POST", "/api/v1/leads", lead)
            latencies.append((time.perf_counter() - started) * 1000)
            if status == 201 and json.loads(body).get("assignee_id"):
                placed += 1
            else:
                failed += 1

    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(clients)))
    cpu, elapsed = time.process_time() - cpu, time.perf_counter() - started
    return {
        "placed_per_s": placed / elapsed,
        "placed": placed,
        "failed": failed,
        "cpu_ms_per_lead": 1000 * cpu / max(len(numbers), 1),
        **percentiles(latencies),
    }
