"""Shared bits for benchmarks: machine description, percentiles, database set-up."""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from allot.app import load_contexts
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


async def post_leads(
    http: httpx.AsyncClient, token: str, count: int, clients: int, tag: str
) -> dict[str, float]:
    """POST `count` leads from `clients` concurrent loops; a lead counts as placed only when the
    answer is 201 with an `assignee_id` (assigned, not merely accepted)."""
    latencies: list[float] = []
    placed = failed = 0
    numbers = iter(range(count))
    headers = {"Authorization": f"Bearer {token}"}

    async def client_loop() -> None:
        nonlocal placed, failed
        for n in numbers:
            body = {
                "source": "bench",
                "external_id": f"{tag}-{n}",
                "customer": {"name": f"Клиент {n}", "phone": f"+7912{n % 10_000_000:07d}"},
                "priority": n % 3,
            }
            started = time.perf_counter()
            response = await http.post("/api/v1/leads", json=body, headers=headers)
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code == 201 and response.json().get("assignee_id"):
                placed += 1
            else:
                failed += 1

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return {
        "placed_per_s": placed / elapsed,
        "placed": placed,
        "failed": failed,
        **percentiles(latencies),
    }
