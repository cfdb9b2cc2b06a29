"""Routing engine decision latency with 1,000 agents and 10,000 waiting items.

Two decisions are measured, each inside its own unit of work (the commit is timed separately):
- intake: `routing.submit` of a new item while 1,000 agents have spare capacity
  (choose the least-loaded eligible agent, reserve capacity, claim the item);
- backlog: `routing.complete` of an item while 10,000 items wait, which frees capacity and
  places the best waiting item with that agent in the same transaction.
Target: p99 < 5 ms per decision. Usage: python -m bench.engine_decision [sqlite|postgresql]

Besides wall-clock percentiles it prints what a shared, noisy machine changes less: the SQL
statements each decision ran (mean; BEGIN not counted, nor the pool's pre-ping round trips on
PostgreSQL) and this process's CPU time per decision (mean).

PostgreSQL statistics are refreshed after each set-up step, as autovacuum does in production
(migration 0004: after every 1,000 changes). Without it (a `create_all` schema, and a server that
may run with autovacuum off) nothing ever analyzes the tables, and asyncpg's prepared statements
keep the generic plans PostgreSQL made against the near-empty tables of their first executions:
the claim UPDATE then walked `ix_routing_items_state` past every waiting item instead of taking
the primary key (1.1 ms instead of 0.2 ms), which production would not see.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import event, text, update

from allot.app import settle_garbage_collector
from allot.contexts.routing import agent_service, mirror, queue_service, service
from allot.contexts.routing import repository as repo
from allot.contexts.routing.flow import Moment
from allot.contexts.routing.models import Agent
from allot.contexts.routing.schemas import AgentCreate, QueueCreate
from allot.kernel.db.engine import Database
from bench.common import fresh_database, machine, percentiles

AGENTS = 1_000
WAITING = 10_000
SAMPLES = 2_000
TARGET_P99_MS = 5.0


async def run(backend: str) -> None:
    database = await fresh_database(backend, Path(tempfile.mkdtemp()))
    rng = random.Random(7)
    async with database.transaction() as session:
        await queue_service.create_queue(
            session, QueueCreate(name="Займы", member_expression='"loans" in skills')
        )
    started = time.perf_counter()
    for n in range(AGENTS):
        async with database.transaction() as session:
            await agent_service.create_agent(
                session,
                AgentCreate(
                    name=f"Менеджер {n}", capacity=10, skills=["loans"], status="available"
                ),
            )
    print(f"  set-up: {AGENTS} agents in {time.perf_counter() - started:.1f} s")
    await analyze(database)
    statements = StatementCounter(database)
    # As a server process does at start-up (`allot.app`'s lifespan): what lives as long as the
    # process is frozen out of collections, and the first generation is larger. Without it, a
    # collection of the middle generation (~1.2 ms here, one in ~100 decisions) lands in p99.
    settle_garbage_collector()

    # Intake decisions, with loads spread by the engine itself.
    decide, commit, cpu = [], [], []
    for n in range(SAMPLES):
        async with database.transaction() as session:
            c0, t0 = time.process_time(), time.perf_counter()
            with statements:
                result = await service.submit(
                    session, reference=f"in:{n}", kind="lead", priority=rng.randint(0, 3)
                )
            t1, c1 = time.perf_counter(), time.process_time()
        t2 = time.perf_counter()
        assert result.state == "assigned"
        decide.append((t1 - t0) * 1000)
        commit.append((t2 - t1) * 1000)
        cpu.append((c1 - c0) * 1000)
    report("intake decision (submit)", decide, commit, cpu, statements.per_decision(SAMPLES))

    # Fill every agent, then queue 10,000 waiting items.
    async with database.transaction() as session:
        await session.execute(update(Agent).values(capacity=Agent.load))
        at = Moment.read()
        for agent in await agent_service.list_agents(session):
            await mirror.sync_memberships(
                session, await repo.load_agent_state(session, agent.id), at.today, at.month
            )
    started = time.perf_counter()
    for n in range(WAITING):
        async with database.transaction() as session:
            result = await service.submit(
                session, reference=f"w:{n}", kind="lead", priority=rng.randint(0, 3)
            )
        assert result.state == "waiting"
    print(f"  set-up: {WAITING} waiting items in {time.perf_counter() - started:.1f} s")
    await analyze(database)

    decide, commit, cpu = [], [], []
    for n in range(min(SAMPLES, 2000)):
        async with database.transaction() as session:
            c0, t0 = time.process_time(), time.perf_counter()
            with statements:
                await service.complete(session, f"in:{n}")
            t1, c1 = time.perf_counter(), time.process_time()
        t2 = time.perf_counter()
        decide.append((t1 - t0) * 1000)
        commit.append((t2 - t1) * 1000)
        cpu.append((c1 - c0) * 1000)
    per_decision = statements.per_decision(len(decide))
    report("backlog decision (complete -> next waiting placed)", decide, commit, cpu, per_decision)
    await database.dispose()


class StatementCounter:
    """Counts the SQL statements run inside `with counter:` blocks (not BEGIN)."""

    def __init__(self, database: Database) -> None:
        self.counting = False
        self.count = 0
        event.listen(database.write_engine.sync_engine, "before_cursor_execute", self._record)

    def _record(self, _conn: object, _cursor: object, statement: str, *_: object) -> None:
        if self.counting and not statement.lstrip().upper().startswith("BEGIN"):
            self.count += 1

    def __enter__(self) -> None:
        self.counting = True

    def __exit__(self, *_: object) -> None:
        self.counting = False

    def per_decision(self, decisions: int) -> float:
        counted, self.count = self.count, 0
        return counted / decisions


async def analyze(database: Database) -> None:
    """What autovacuum would have done by now (see the module docstring); SQLite plans without
    statistics in production too, so it is left as it is."""
    if database.is_sqlite:
        return
    async with database.transaction() as session:
        await session.execute(text("ANALYZE"))


def report(
    name: str, decide: list[float], commit: list[float], cpu: list[float], statements: float
) -> None:
    d, c = percentiles(decide), percentiles(commit)
    verdict = "meets" if d["p99"] < TARGET_P99_MS else "MISSES"
    print(
        f"  {name}: p50 {d['p50']:.2f} ms, p90 {d['p90']:.2f} ms, p99 {d['p99']:.2f} ms "
        f"(target p99 < {TARGET_P99_MS} ms: {verdict}, ratio {TARGET_P99_MS / d['p99']:.1f}x); "
        f"commit p50 {c['p50']:.2f} ms, p99 {c['p99']:.2f} ms; "
        f"{statements:.1f} statements and {sum(cpu) / len(cpu):.2f} ms CPU per decision"
    )


def main() -> None:
    backends = sys.argv[1:] or ["sqlite", "postgresql"]
    print(f"machine: {machine()}")
    for backend in backends:
        print(f"{backend}: {AGENTS} agents, {WAITING} waiting items, {SAMPLES} samples")
        asyncio.run(run(backend))


if __name__ == "__main__":
    main()
