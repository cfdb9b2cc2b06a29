"""HTTP intake + assignment: leads placed per second through `POST /api/v1/leads`.

Starts a real `allot serve` process (uvicorn, in-process events and timers) on SQLite or
PostgreSQL, creates a queue and agents through the API, then drives it with wrk (bench/intake.lua,
a unique lead per request) at 1, 8 and 32 concurrent connections. A lead counts as placed when
the answer is 201 AND it carries an `assignee_id` (assigned, not merely accepted). wrk is a C load
generator: a Python client would eat the CPU the server is measured on. With `--preload N`, N
leads are stored first (through the bulk import path, see bench/seed.py) to show whether intake
stays flat as tables grow.

Usage: python -m bench.http_intake [--backend sqlite|postgresql] [--seconds 15]
       [--clients 1,8,32] [--preload 200000]
Baseline to beat (issue): the best open-source Python CRM here takes ~110 leads/s with 8 clients
without assigning anyone, ~30/s with 200k leads stored; the target is 10x that.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench.common import PG_ADMIN, machine

BASELINE = {"empty": 110.0, "preloaded": 30.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "allot", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


async def prepare_database(backend: str, workdir: Path) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{workdir / 'bench.sqlite3'}"
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    admin = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text('DROP DATABASE IF EXISTS "allot_bench_http" WITH (FORCE)'))
        await conn.execute(text('CREATE DATABASE "allot_bench_http"'))
    await admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + "/allot_bench_http"


async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="allot-bench-"))
    url = await prepare_database(args.backend, workdir)
    env = {
        **os.environ,
        "ALLOT_DATABASE_URL": url,
        "ALLOT_DATA_DIR": str(workdir),
        "ALLOT_LOG_LEVEL": "WARNING",
        "ALLOT_SECRET_KEY": "bench-secret-key-0123456789",
        # One token pushes every lead: the per-user API limit would measure itself, not intake.
        "ALLOT_API_RATE_LIMIT": "",
    }
    cli(env, "migrate", "upgrade", "head")
    cli(
        env,
        "users",
        "create",
        "--email",
        "bench@example.com",
        "--password",
        "bench-password-123",
        "--role",
        "admin",
    )
    token = cli(env, "tokens", "create", "--email", "bench@example.com")
    if args.preload:
        from bench.seed import preload_leads

        started = time.perf_counter()
        await preload_leads(url, args.preload)
        print(f"  preloaded {args.preload} leads in {time.perf_counter() - started:.0f} s")
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "allot",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            for _ in range(100):
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
            headers = {"Authorization": f"Bearer {token}"}
            queue = {
                "name": "Займы",
                "work_kinds": ["lead"],
                "member_expression": '"loans" in skills',
            }
            (await http.post("/api/v1/queues", json=queue, headers=headers)).raise_for_status()
            for n in range(args.agents):
                agent = {
                    "name": f"Менеджер {n}",
                    "email": f"m{n}@example.com",
                    "capacity": 1000,
                    "skills": ["loans"],
                }
                created = (await http.post("/api/v1/agents", json=agent, headers=headers)).json()
                await http.put(
                    f"/api/v1/agents/{created['id']}/status",
                    json={"status": "available"},
                    headers=headers,
                )
        state = "preloaded" if args.preload else "empty"
        for clients in args.clients:
            before, cpu_before = batch_totals(base), server_cpu_seconds(server.pid)
            result = drive(base, token, clients, args.seconds)
            after, cpu_after = batch_totals(base), server_cpu_seconds(server.pid)
            placed = result["placed_per_s"] * result["seconds"]
            cpu_ms = (cpu_after - cpu_before) * 1000 / placed if placed else 0.0
            batches = after[1] - before[1]
            # /metrics is per process: with several workers it shows whichever answered.
            per_batch = (
                f"{(after[0] - before[0]) / batches:.1f}" if batches and args.workers == 1 else "?"
            )
            ratio = result["placed_per_s"] / BASELINE[state]
            print(
                f"  {args.backend} x{args.workers}, {clients:>2} clients, {state} "
                f"({args.preload} stored): "
                f"{result['placed_per_s']:.0f} leads placed/s ({ratio:.1f}x baseline "
                f"{BASELINE[state]:.0f}/s), p50 {result['p50_ms']:.1f} ms, "
                f"p99 {result['p99_ms']:.1f} ms, {result['refused']:.0f} not placed, "
                f"{result['errors']:.0f} errors; {per_batch} leads per group commit, "
                f"server CPU {cpu_ms:.2f} ms per lead",
                flush=True,
            )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def server_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of the server and its worker processes: a figure that, unlike
    throughput, hardly moves when something else runs on the machine."""
    clock_ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent = int(fields[1])
        if int(proc.name) == pid or parent == pid:
            total += (int(fields[11]) + int(fields[12])) / clock_ticks
    return total


def batch_totals(base: str) -> tuple[float, float]:
    """Leads and batches of the intake's group commit so far (of the process that answers)."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    found = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        for part in found:
            if line.startswith(f'allot_group_commit_batch_rows_{part}{{name="leads.intake"}}'):
                found[part] = float(line.rsplit(" ", 1)[1])
    return found["sum"], found["count"]


def drive(base: str, token: str, clients: int, seconds: int) -> dict[str, float]:
    """Run wrk against the server; the Lua script counts placed leads and prints RESULT."""
    script = Path(__file__).with_name("intake.lua")
    env = {**os.environ, "ALLOT_TOKEN": token, "ALLOT_TAG": uuid.uuid4().hex[:8]}
    threads = str(min(clients, 2))
    command = ["wrk", "-t", threads, "-c", str(clients), "-d", f"{seconds}s", "--timeout", "30s"]
    output = subprocess.run(
        [*command, "-s", str(script), base], env=env, capture_output=True, text=True, check=True
    ).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    return {key: float(value) for key, value in (pair.split("=") for pair in line.split()[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--seconds", type=int, default=15, help="per client level")
    parser.add_argument("--agents", type=int, default=40, help="capacity 1,000 each")
    parser.add_argument(
        "--clients", type=lambda v: [int(x) for x in v.split(",")], default=[1, 8, 32]
    )
    parser.add_argument("--preload", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="server processes (PostgreSQL)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
