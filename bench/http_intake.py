"""HTTP intake + assignment: leads placed per second through `POST /api/v1/leads`.

Starts a real `allot serve` process (uvicorn, in-process events and timers) on SQLite or
PostgreSQL, creates a queue and agents through the API, then drives it with wrk (bench/intake.lua,
a unique lead per request) at 1, 8 and 32 concurrent connections. A lead counts as placed when
the answer is 201 AND it carries an `assignee_id` (assigned, not merely accepted). wrk is a C load
generator: a Python client would eat the CPU the server is measured on. With `--preload N`, N
leads are stored first (through the bulk import path, see bench/seed.py) to show whether intake
stays flat as tables grow.

With `--topology broker` (PostgreSQL) the fleet is the split roles in broker mode instead:
`allot api --workers N` (N uvicorn processes on one port), one `allot relay`, one `allot worker`
and one `allot timers`, with RabbitMQ and Redis under namespaces of the run's own (deleted at
the end). Each level then prints the CPU per placed lead of every role, of the PostgreSQL
backends serving the bench database, and of RabbitMQ (the whole broker: shared with whatever
else runs on the machine).

Usage: python -m bench.http_intake [--backend sqlite|postgresql] [--seconds 15]
       [--clients 1,8,32] [--preload 200000] [--workers N] [--topology single|broker]
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
BENCH_DATABASE = "allot_bench_http"
RABBITMQ = os.environ.get("ALLOT_BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS = os.environ.get("ALLOT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


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
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)'))
        await conn.execute(text(f'CREATE DATABASE "{BENCH_DATABASE}"'))
    await admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{BENCH_DATABASE}"


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
    run_id = uuid.uuid4().hex[:8]
    if args.topology == "broker":
        env |= {
            "ALLOT_BROKER_URL": RABBITMQ,
            "ALLOT_BROKER_NAMESPACE": f"bench-http-{run_id}",
            "ALLOT_REDIS_URL": REDIS,
            "ALLOT_REDIS_NAMESPACE": f"bench-http-{run_id}",
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
    fleet = start_fleet(args, env, port, workdir)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            # Several processes importing Allot at once on a busy 2-core machine: minutes.
            deadline = time.monotonic() + 300
            while True:
                check_alive(fleet, workdir)
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
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
        if args.topology == "broker":
            # The set-up's events relayed: the relay is up and publishing before the clock runs.
            await wait_for_backlog(base, fleet, workdir, at_most=0, seconds=120)
        await wait_until_idle(fleet)
        state = "preloaded" if args.preload else "empty"
        for clients in args.clients:
            before, cpu_before = batch_totals(base), fleet_cpu(fleet)
            result = drive(base, token, clients, args.seconds)
            after, cpu_after = batch_totals(base), fleet_cpu(fleet)
            placed = result["placed_per_s"] * result["seconds"]
            cpu = {k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after}
            if args.topology == "broker":
                report_broker_level(args, clients, result, placed, cpu, base)
                continue
            cpu_ms = cpu["server"] * 1000 / placed if placed else 0.0
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
        for process in reversed(fleet.values()):
            process.send_signal(signal.SIGTERM)
        for process in fleet.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        if args.topology == "broker":
            await clean_broker_and_redis(env)


def start_fleet(
    args: argparse.Namespace, env: dict[str, str], port: int, workdir: Path
) -> dict[str, subprocess.Popen[bytes]]:
    """The processes under test by role: `serve` (single topology), or `api` (its uvicorn
    workers are its children), `relay`, `worker` and `timers` (broker topology)."""
    address = ["--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers)]
    if args.topology == "single":
        commands = {"server": ["serve", *address]}
    else:
        roles = {"relay": ["relay"], "worker": ["worker"], "timers": ["timers"]}
        commands = {"api": ["api", *address], **roles}
    fleet = {}
    for role, command in commands.items():
        # stderr to a file in the work directory: a role that refuses to start says why there.
        with (workdir / f"{role}.log").open("wb") as log:
            fleet[role] = subprocess.Popen(
                [sys.executable, "-m", "allot", *command],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
    return fleet


def check_alive(fleet: dict[str, subprocess.Popen[bytes]], workdir: Path) -> None:
    for role, process in fleet.items():
        if process.poll() is not None:
            log = (workdir / f"{role}.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"{role} exited with {process.returncode}:\n{log}")


async def wait_for_backlog(
    base: str,
    fleet: dict[str, subprocess.Popen[bytes]],
    workdir: Path,
    *,
    at_most: int,
    seconds: float,
) -> float:
    """Poll /metrics until the outbox backlog is at most `at_most`; returns the last value."""
    deadline = time.monotonic() + seconds
    while True:
        check_alive(fleet, workdir)
        backlog = metric(base, "allot_outbox_backlog")
        if backlog <= at_most or time.monotonic() > deadline:
            return backlog
        await asyncio.sleep(0.5)


async def wait_until_idle(fleet: dict[str, subprocess.Popen[bytes]], seconds: float = 180) -> None:
    """Until the fleet uses less than a fifth of a core: a uvicorn worker still importing Allot
    after /healthz answered (another one did) would bill its start-up to the first level."""
    deadline = time.monotonic() + seconds
    last = sum(v for k, v in fleet_cpu(fleet).items() if k in fleet)
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        now = sum(v for k, v in fleet_cpu(fleet).items() if k in fleet)
        if now - last < 0.2:
            return
        last = now


def report_broker_level(
    args: argparse.Namespace,
    clients: int,
    result: dict[str, float],
    placed: float,
    cpu: dict[str, float],
    base: str,
) -> None:
    def per_lead(seconds: float) -> str:
        return f"{seconds * 1000 / placed:.2f}" if placed else "?"

    fleet_roles = ("api", "relay", "worker", "timers")
    fleet_total = sum(cpu[role] for role in fleet_roles)
    breakdown = ", ".join(f"{role} {per_lead(cpu[role])}" for role in fleet_roles)
    load = os.getloadavg()
    print(
        f"  broker, api x{args.workers}, {clients:>2} clients: "
        f"{result['placed_per_s']:.0f} leads placed/s, p50 {result['p50_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms, {result['refused']:.0f} not placed, "
        f"{result['errors']:.0f} errors; outbox backlog at the end "
        f"{metric(base, 'allot_outbox_backlog'):.0f}\n"
        f"    CPU ms per placed lead: fleet {per_lead(fleet_total)} ({breakdown}); "
        f"PostgreSQL backends of the bench database {per_lead(cpu['postgres'])}, "
        f"RabbitMQ (whole broker) {per_lead(cpu['rabbitmq'])}; "
        f"load average {load[0]:.1f} / {load[1]:.1f}",
        flush=True,
    )


def metric(base: str, name: str) -> float:
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith(f"{name} ") or line.startswith(f"{name}{{"):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def _processes() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent pid, CPU seconds user + system, command line) of every process we can
    read (/proc: no psutil in the environment)."""
    clock_ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        cpu = (int(fields[11]) + int(fields[12])) / clock_ticks
        found[int(proc.name)] = (int(fields[1]), cpu, command)
    return found


def fleet_cpu(fleet: dict[str, subprocess.Popen[bytes]]) -> dict[str, float]:
    """CPU seconds so far (user + system) of each role's process tree, of the PostgreSQL
    backends connected to the bench database and of RabbitMQ: figures that, unlike
    throughput, hardly move when something else runs on the machine (RabbitMQ's do: it is the
    whole broker). A backend that exits between two samples takes its CPU with it."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _cpu, _command) in processes.items():
        children.setdefault(parent, []).append(pid)

    def tree(pid: int) -> float:
        own = processes.get(pid, (0, 0.0, ""))[1]
        return own + sum(tree(child) for child in children.get(pid, []))

    totals = {role: tree(process.pid) for role, process in fleet.items()}
    # A backend's title: "postgres: <user> <database> <client> <state>".
    totals["postgres"] = sum(
        cpu
        for _parent, cpu, command in processes.values()
        if command.startswith("postgres: ") and f" {BENCH_DATABASE} " in command
    )
    totals["rabbitmq"] = sum(
        cpu for _parent, cpu, command in processes.values() if "beam.smp" in command
    )
    return totals


async def clean_broker_and_redis(env: dict[str, str]) -> None:
    """Delete the run's exchanges and queues (every group of the application) and Redis keys."""
    import aio_pika
    import redis.asyncio as aioredis

    from allot.app import load_contexts
    from allot.kernel.config import Settings
    from allot.kernel.events.broker import Topology, consumer_groups

    load_contexts()
    settings = Settings(
        database_url=env["ALLOT_DATABASE_URL"],
        secret_key=env["ALLOT_SECRET_KEY"],
        broker_url=RABBITMQ,
        broker_namespace=env["ALLOT_BROKER_NAMESPACE"],
    )
    exchanges, queues = Topology.from_settings(settings).all_names(list(consumer_groups()))
    connection = await aio_pika.connect(RABBITMQ)
    async with connection:
        for name in queues:
            channel = await connection.channel()
            await channel.queue_delete(name)
        for name in exchanges:
            channel = await connection.channel()
            await channel.exchange_delete(name)
    client = aioredis.from_url(REDIS)
    try:
        keys = [key async for key in client.scan_iter(f"{env['ALLOT_REDIS_NAMESPACE']}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


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
    parser.add_argument(
        "--topology",
        choices=["single", "broker"],
        default="single",
        help="single: `allot serve` processes with in-process events; broker: `allot api` "
        "processes + one relay, worker and timers on RabbitMQ and Redis (PostgreSQL)",
    )
    args = parser.parse_args()
    if args.topology == "broker" and args.backend != "postgresql":
        parser.error("--topology broker needs --backend postgresql")
    print(f"machine: {machine()}")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
