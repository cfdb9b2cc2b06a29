"""The broker event bus end to end on PostgreSQL: outbox → relay → RabbitMQ → worker → inbox.

A relay process and N worker processes (as `allot relay` / `allot worker` would run them), one
durable consumer that applies each event with its inbox row (the dedup the real consumers pay)
and records how long after the event was written it ran.

0. stages: the relay alone over a backlog, then a worker alone over the queue it filled (in
   this process), to show which stage limits;
1. backlog: N events are written first, then relay and workers start; events/s = N / time until
   the last inbox row is committed (claims and publishes in batches with confirms, consumers
   commit their inbox rows in batches);
2. stream: events are written at a steady rate in small transactions (as requests would) while
   the bus runs; end-to-end lag (outbox write → handler) p50/p99/max.

Usage: PYTHONPATH=. python -m bench.event_bus [--events 50000] [--rate 2000] [--seconds 10]
       [--workers 1] [--classic] [--only stages|backlog|stream]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time
from typing import Any

import aio_pika
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel.clock import utcnow
from allot.kernel.config import Settings
from allot.kernel.db.engine import Database
from allot.kernel.events import ConsumerRegistry, Event, InboxEntry
from allot.kernel.events.broker import BrokerWorker, Relay, Topology
from allot.kernel.events.outbox import NewEvent, publish_many
from bench.common import fresh_database, machine, percentiles

RABBITMQ = os.environ.get("ALLOT_BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
CONSUMER = "bench.applied"
EVENT_TYPE = "bench.thing.happened"

BENCH = ConsumerRegistry()
_lags_ms: list[float] = []


@BENCH.subscribe(CONSUMER, EVENT_TYPE)
async def applied(session: AsyncSession, event: Event) -> None:
    assert event.created_at is not None
    _lags_ms.append((utcnow() - event.created_at).total_seconds() * 1000)


def _settings(url: str, namespace: str, quorum: bool) -> Settings:
    return Settings(
        database_url=url,
        secret_key="x" * 32,
        broker_url=RABBITMQ,
        broker_namespace=namespace,
        broker_quorum_queues=quorum,
        broker_ordered_groups="",
        log_level="WARNING",
    )


def _child(role: str, settings: dict[str, Any], stop: Any, results: Any) -> None:
    async def main() -> None:
        from allot.kernel.logging import configure_logging

        configure_logging("WARNING", json=False)
        configured = Settings(**settings)
        database = Database(configured.resolved_database_url, pool_size=4)
        runner: Any = (
            Relay(database, configured, consumers=BENCH)
            if role == "relay"
            else BrokerWorker(database, configured, consumers=BENCH)
        )
        await runner.start()
        started = time.process_time()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await runner.stop()
        await database.dispose()
        results.put((role, time.process_time() - started, list(_lags_ms)))

    asyncio.run(main())


class Bus:
    """Relay and workers in their own processes."""

    def __init__(self, settings: Settings, workers: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.stop = context.Event()
        self.results = context.Queue()
        dump = settings.model_dump(mode="json")
        dump["secret_key"] = "x" * 32
        roles = ["relay"] + ["worker"] * workers
        self.processes = [
            context.Process(target=_child, args=(role, dump, self.stop, self.results))
            for role in roles
        ]

    def start(self) -> None:
        for process in self.processes:
            process.start()

    def finish(self) -> list[tuple[str, float, list[float]]]:
        self.stop.set()
        out = [self.results.get(timeout=60) for _ in self.processes]
        for process in self.processes:
            process.join(timeout=30)
        return out


async def _applied(database: Database) -> int:
    async with database.reader() as session:
        stmt = select(func.count()).select_from(InboxEntry).where(InboxEntry.consumer == CONSUMER)
        return int((await session.execute(stmt)).scalar_one())


async def _write(database: Database, count: int, per_transaction: int) -> None:
    for start in range(0, count, per_transaction):
        async with database.transaction() as session:
            await publish_many(
                session,
                [
                    NewEvent(EVENT_TYPE, "bench.thing", str(n), {"n": n})
                    for n in range(start, min(count, start + per_transaction))
                ],
            )


async def _wait_applied(database: Database, expected: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while await _applied(database) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {await _applied(database)} of {expected} applied")
        await asyncio.sleep(0.2)  # a count of the inbox is not free: not too often


async def _clean_topology(settings: Settings) -> None:
    topology = Topology.from_settings(settings)
    exchanges, queues = topology.all_names(["bench"])
    connection = await aio_pika.connect(RABBITMQ)
    async with connection:
        channel = await connection.channel()
        for name in queues:
            await channel.queue_delete(name)
        for name in exchanges:
            await channel.exchange_delete(name)


async def backlog(args: argparse.Namespace, database: Database, settings: Settings) -> None:
    before = await _applied(database)
    await _write(database, args.events, 1000)
    bus = Bus(settings, args.workers)
    started = time.perf_counter()
    bus.start()
    while await _applied(database) == before:  # processes start, connect, declare
        await asyncio.sleep(0.01)
    flowing = time.perf_counter()
    first = await _applied(database) - before
    await _wait_applied(database, before + args.events)
    done = time.perf_counter()
    results = bus.finish()
    cpu = {role: seconds for role, seconds, _ in results}
    print(
        f"  backlog of {args.events:,}: {(args.events - first) / (done - flowing):,.0f} events/s "
        f"once flowing ({done - started:.1f} s in all with process start-up); CPU per event: "
        + ", ".join(f"{role} {1e6 * s / args.events:.0f} µs" for role, s in cpu.items())
    )


async def stream(args: argparse.Namespace, database: Database, settings: Settings) -> None:
    bus = Bus(settings, args.workers)
    bus.start()
    before = await _applied(database)
    await asyncio.sleep(3)  # processes start, connect and declare (not part of the figures)
    total = int(args.rate * args.seconds)
    tick = 0.01
    per_tick = max(1, round(args.rate * tick))
    started = time.perf_counter()
    written = 0
    while written < total:
        due = started + (written / per_tick) * tick
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        batch = min(per_tick, total - written)
        # One transaction per event, as concurrent requests write them.
        await asyncio.gather(*(_write(database, 1, 1) for _ in range(batch)))
        written += batch
    write_seconds = time.perf_counter() - started
    await _wait_applied(database, before + total)
    results = bus.finish()
    lags = [lag for role, _, samples in results if role == "worker" for lag in samples]
    cut = percentiles(lags)
    print(
        f"  stream {total:,} events at {total / write_seconds:,.0f}/s written: lag p50 "
        f"{cut['p50']:.1f} ms, p99 {cut['p99']:.1f} ms, max {cut['max']:.1f} ms"
    )


async def stages(args: argparse.Namespace, database: Database, settings: Settings) -> None:
    """Each stage alone, in this process: the relay over a backlog (nothing consumes), then a
    worker over the queue it filled. Shows which stage limits the pipeline."""
    await _write(database, args.events, 1000)
    relay = Relay(database, settings, consumers=BENCH)
    await relay.start()
    await relay.connected.wait()
    started, cpu = time.perf_counter(), time.process_time()
    while relay.published < args.events:
        await asyncio.sleep(0.01)
    relay_rate = args.events / (time.perf_counter() - started)
    relay_cpu = (time.process_time() - cpu) / args.events
    await relay.stop()
    worker = BrokerWorker(database, settings, consumers=BENCH)
    await worker.start()
    await worker.connected.wait()
    started, cpu = time.perf_counter(), time.process_time()
    while worker.acked < args.events:
        await asyncio.sleep(0.01)
    worker_rate = args.events / (time.perf_counter() - started)
    worker_cpu = (time.process_time() - cpu) / args.events
    batch = worker.acked / max(1, worker.batches)
    await worker.stop()
    print(
        f"  each stage alone, {args.events:,} events: relay {relay_rate:,.0f}/s "
        f"({1e6 * relay_cpu:.0f} µs CPU each), worker {worker_rate:,.0f}/s "
        f"({1e6 * worker_cpu:.0f} µs CPU each, {batch:.0f} events per unit of work)"
    )


async def run(args: argparse.Namespace) -> None:
    import tempfile
    from pathlib import Path

    from allot.kernel.logging import configure_logging

    configure_logging("WARNING", json=False)
    database = await fresh_database("postgresql", Path(tempfile.mkdtemp()))
    namespace = f"bench-{os.getpid()}"
    settings = _settings(database.url, namespace, quorum=not args.classic)
    kind = "classic" if args.classic else "quorum"
    print(f"  PostgreSQL, {kind} queues, 1 relay + {args.workers} worker process(es)")
    try:
        for part, measure in (("stages", stages), ("backlog", backlog), ("stream", stream)):
            if args.only in (None, part):
                await measure(args, database, settings)
    finally:
        await database.dispose()
        await _clean_topology(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--classic", action="store_true", help="classic queues, not quorum")
    parser.add_argument("--only", choices=("stages", "backlog", "stream"), help="one part only")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
