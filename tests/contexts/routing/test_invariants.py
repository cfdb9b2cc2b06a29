"""Invariants under random histories and real concurrency.

I1 no capacity overrun, I2 no double owner / one state per item, I3 no offer to an unavailable
agent and none repeated to a decliner — checked after every step of random sequences of
submissions, completions, accepts, declines, timeouts and availability flips, and after bursts
of concurrent writers (several processes on PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from allot.contexts import routing
from allot.contexts.routing import agent_service, service
from allot.contexts.routing.models import (
    Agent,
    AgentKindLoad,
    AgentLeave,
    Offer,
    Queue,
    QueueMember,
    WorkItem,
)
from allot.kernel.db.engine import Database
from allot.kernel.errors import Conflict
from allot.kernel.events import InboxEntry, OutboxEvent
from allot.kernel.timers import Timer, TimerRunner

from .helpers import assert_invariants, make_agent, make_queue, set_status

operation = st.one_of(
    st.tuples(st.just("submit"), st.integers(0, 3), st.integers(1, 2)),
    st.tuples(st.just("complete"), st.integers(0, 50)),
    st.tuples(st.just("accept"), st.integers(0, 50)),
    st.tuples(st.just("decline"), st.integers(0, 50)),
    st.tuples(st.just("wait"), st.integers(1, 400)),
    st.tuples(
        st.just("status"), st.integers(0, 3), st.sampled_from(["available", "away", "offline"])
    ),
)


async def _reset(database: Database) -> None:
    async with database.transaction() as session:
        for model in (
            Offer,
            WorkItem,
            QueueMember,
            AgentKindLoad,
            AgentLeave,
            Agent,
            Queue,
            Timer,
            OutboxEvent,
            InboxEntry,
        ):
            await session.execute(delete(model))


async def _apply(database, clock, step, agents, counter) -> None:
    kind = step[0]
    if kind == "submit":
        counter[0] += 1
        async with database.transaction() as session:
            await service.submit(
                session, reference=f"p:{counter[0]}", kind="lead", priority=step[1], weight=step[2]
            )
        return
    if kind == "wait":
        clock.advance(step[1])
        await TimerRunner(database).fire_due()
        return
    if kind == "status":
        await set_status(database, agents[step[1] % len(agents)].id, step[2])
        return
    async with database.reader() as session:
        if kind == "complete":
            rows = (
                (
                    await session.execute(
                        select(WorkItem.reference).where(WorkItem.state == "assigned")
                    )
                )
                .scalars()
                .all()
            )
        else:
            rows = (
                await session.execute(
                    select(Offer.id, Offer.agent_id).where(Offer.status == "pending")
                )
            ).all()
    if not rows:
        return
    chosen = rows[step[1] % len(rows)]
    async with database.transaction() as session:
        if kind == "complete":
            await service.complete(session, chosen)
        elif kind == "accept":
            await service.accept_offer(session, chosen.id, chosen.agent_id)
        else:
            await service.decline_offer(session, chosen.id, chosen.agent_id)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    mode=st.sampled_from(["direct", "offer", "broadcast"]),
    strategy=st.sampled_from(["least_loaded", "most_available", "round_robin", "longest_idle"]),
    capacities=st.lists(st.integers(0, 3), min_size=1, max_size=4),
    steps=st.lists(operation, min_size=1, max_size=25),
)
async def test_random_histories_keep_every_invariant(
    database, clock, mode, strategy, capacities, steps
):
    await _reset(database)
    await make_queue(
        database,
        offer_mode=mode,
        strategy=strategy,
        broadcast_size=2,
        offer_timeout_seconds=60,
        reclaim_grace_seconds=120,
    )
    agents = [await make_agent(database, capacity=c) for c in capacities]
    counter = [0]
    for step in steps:
        await _apply(database, clock, step, agents, counter)
        await assert_invariants(database)
    # Never re-offered to a decliner: at most one offer row per (item, agent) outside rescinds.
    seen = set()
    for offer in await _offers(database):
        if offer.status in ("declined", "timed_out", "accepted", "pending"):
            assert (offer.item_id, offer.agent_id) not in seen
            seen.add((offer.item_id, offer.agent_id))


async def _offers(database):
    async with database.reader() as session:
        return list((await session.execute(select(Offer))).scalars())


async def test_concurrent_intake_never_overruns_capacity(database, clock):
    await make_queue(database)
    agents = [await make_agent(database, capacity=3) for _ in range(5)]

    async def one(n: int) -> str:
        result = await database.run(
            lambda session: service.submit(session, reference=f"c:{n}", kind="lead")
        )
        return result.state

    states = await asyncio.gather(*(one(n) for n in range(40)))
    assert states.count("assigned") == 15
    assert states.count("waiting") == 25
    await assert_invariants(database)
    assert len(agents) == 5


async def test_concurrent_status_flips_and_completions_keep_invariants(database, clock):
    await make_queue(database, offer_mode="broadcast", broadcast_size=2)
    agents = [await make_agent(database, capacity=2) for _ in range(4)]
    for n in range(12):
        async with database.transaction() as session:
            await service.submit(session, reference=f"f:{n}", kind="lead")

    async def flip(agent, status):
        await database.run(lambda session: agent_service.set_status(session, agent.id, status))

    async def accept_all():
        for offer in await _offers(database):
            if offer.status == "pending":
                with contextlib.suppress(Conflict):
                    await database.run(
                        lambda session, o=offer: service.accept_offer(session, o.id, o.agent_id)
                    )

    await asyncio.gather(
        flip(agents[0], "away"),
        flip(agents[1], "offline"),
        accept_all(),
        flip(agents[0], "available"),
    )
    await assert_invariants(database)


def _process_intake(url: str, start: int, count: int) -> None:
    """One 'API process': its own engine and pool, submitting items as fast as it can."""

    async def run() -> None:
        database = Database(url, pool_size=4)
        try:

            async def one(n: int) -> None:
                await database.run(
                    lambda session: service.submit(session, reference=f"mp:{n}", kind="lead")
                )

            await asyncio.gather(*(one(n) for n in range(start, start + count)))
        finally:
            await database.dispose()

    asyncio.run(run())


async def test_several_processes_on_postgresql_never_double_assign(database, clock, database_url):
    if database.dialect != "postgresql":
        pytest.skip("multi-process intake needs PostgreSQL (SQLite is single-process by design)")
    states = await _six_agents_of_five_and(database, clock, _process_intake, database_url, 4, 20)
    assert len(states) == 80
    assert states.count("assigned") == 30  # 6 agents x 5: every slot used, none twice
    assert states.count("waiting") == 50


async def _six_agents_of_five_and(database, clock, target, url: str, processes: int, each: int):
    """Six agents of capacity 5, then `processes` real processes running `target(url, first,
    each)` at once; returns the state of every item once they are done, their due timers have
    fired and I1-I3 are checked."""
    await make_queue(database)
    for _ in range(6):
        await make_agent(database, capacity=5)
    context = multiprocessing.get_context("spawn")
    started = [context.Process(target=target, args=(url, n * each, each)) for n in range(processes)]
    for process in started:
        process.start()
    for process in started:
        process.join(timeout=120)
        assert process.exitcode == 0
    # The timers the API processes' runners would fire: backlog passes for agents a batch found
    # busy in another transaction (placement.py). The processes ran on the real clock.
    clock.set(datetime.now(UTC) + timedelta(seconds=1))
    await TimerRunner(database).fire_due()
    await assert_invariants(database)
    async with database.reader() as session:
        return (await session.execute(select(WorkItem.state))).scalars().all()


def _process_batches(url: str, start: int, count: int) -> None:
    """One 'API process' taking its items in as concurrent set-based batches of 5."""

    async def run() -> None:
        database = Database(url, pool_size=4)
        try:

            async def batch(first: int) -> None:
                items = [routing.NewItem(reference=f"mpb:{n}", kind="lead")
                         for n in range(first, first + 5)]  # fmt: skip
                await database.run(lambda session: routing.submit_many(session, items))

            await asyncio.gather(*(batch(n) for n in range(start, start + count, 5)))
        finally:
            await database.dispose()

    asyncio.run(run())


async def test_several_processes_placing_batches_never_overrun_capacity(
    database, clock, database_url
):
    if database.dialect != "postgresql":
        pytest.skip("multi-process intake needs PostgreSQL (SQLite is single-process by design)")
    states = await _six_agents_of_five_and(database, clock, _process_batches, database_url, 3, 40)
    assert len(states) == 120
    assert states.count("assigned") == 30  # 6 agents x 5: every slot used, none twice
    assert states.count("waiting") == 90
