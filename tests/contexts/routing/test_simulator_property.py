"""Any history the real engine makes replays to the same owners: random scenarios (strategies,
offer and broadcast queues, rules with a fallback, steps, ageing and a TTL, quotas, per-kind
caps, random weights (weighted strategies), a `require` relaxed by a step, batches,
first-response deadlines, answers, completions, cancellations,
availability flips and capacity edits), each replayed over three periods."""

from __future__ import annotations

import random
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from allot.contexts.routing.models import WorkItem
from allot.kernel.cache import forget_all_caches
from allot.kernel.db import Base, Database

from .helpers import assert_invariants, make_queue
from .test_simulator import World, assert_reproduced


async def _reset(database: Database) -> None:
    async with database.transaction() as session:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name.startswith(("routing_", "kernel_timers", "kernel_outbox")):
                await session.execute(delete(table))
    forget_all_caches()


async def _references(database: Database, *states: str, unanswered: bool = False) -> list[str]:
    statement = select(WorkItem.reference).where(WorkItem.state.in_(states))
    if unanswered:
        statement = statement.where(WorkItem.first_response_at.is_(None))
    async with database.reader() as session:
        return list((await session.execute(statement.order_by(WorkItem.reference))).scalars())


async def random_history(world: World, rnd: random.Random) -> float:
    db = world.database
    strategy = rnd.choice(["least_loaded", "round_robin", "most_available", "longest_idle"])
    await make_queue(db, name="Loans", strategy=strategy,
                     first_response_seconds=rnd.choice([None, 60, 120]),
                     reclaim_grace_seconds=rnd.choice([30, 90]))  # fmt: skip
    await make_queue(db, name="Big", offer_mode="offer", offer_timeout_seconds=40,
                     member_expression='"big" in skills',
                     strategy=rnd.choice(["least_loaded", "round_robin"]))  # fmt: skip
    await make_queue(db, name="Team", offer_mode="broadcast", broadcast_size=2,
                     offer_timeout_seconds=50)  # fmt: skip
    t = 0.0
    for n in range(rnd.randint(3, 5)):
        t += 1
        await world.at(t)
        fields: dict = {"name": f"A{n}", "capacity": rnd.randint(1, 4),
                        "skills": rnd.choice([["loans"], ["loans", "big"], ["big"]])}  # fmt: skip
        if rnd.random() < 0.3:
            fields["daily_quota"] = rnd.randint(1, 3)
        if rnd.random() < 0.2:
            fields["capacity_by_kind"] = {"lead": 1}
        fields["weight"] = rnd.choice([1, 1, 2, 3, 0.5])
        await world.agent(**fields)
    policy = rnd.choice(["wait", "fallback", "escalate"])
    rest = {"name": "rest", "when": "", "queue": "Loans", "when_nobody_available": policy}
    if policy == "fallback":
        rest["fallback_queue"] = "Team"
    t += 1
    await world.at(t)
    await world.rules({
        "filters": [
            {"name": "big", "when": "amount >= 1000", "queue": "Big",
             "require": "'loans' in skills",
             "steps": [{"after_seconds": 60, "relax": True},
                       {"after_seconds": 100, "queue": "Team"}], "ttl_seconds": 300},
            rest,
        ],
        "ageing": {"every_seconds": 30, "raise_by": 1, "up_to": 4},
    })  # fmt: skip
    for _ in range(30):
        t += rnd.choice([1, 3, 5, 10, 20])
        await world.at(t)
        await _step(world, rnd)
    t += 50
    await world.at(t)
    await assert_invariants(db)
    return t


async def _step(world: World, rnd: random.Random) -> None:
    db, op = world.database, rnd.random()
    due = world.clock.now() + timedelta(seconds=rnd.choice([30, 90]))
    item = {"attributes": {"amount": rnd.choice([10, 5000])},
            "first_response_due_at": due if rnd.random() < 0.5 else None}  # fmt: skip
    if op < 0.3:
        await world.submit(priority=rnd.randint(0, 2), weight=rnd.choice([1, 1, 2]), **item)
    elif op < 0.4:
        await world.batch(rnd.randint(2, 4), priority=rnd.randint(0, 1), **item)
    elif op < 0.55:
        pending = await world.pending_offers()
        if pending:
            await world.answer(rnd.choice(pending), rnd.random() < 0.6)
    elif op < 0.75:
        assigned = await _references(db, "assigned")
        if assigned:
            await world.complete(rnd.choice(assigned))
    elif op < 0.82:
        unanswered = await _references(db, "assigned", unanswered=True)
        if unanswered:
            await world.respond(rnd.choice(unanswered))
    elif op < 0.92:
        status = rnd.choice(["available", "available", "away", "offline"])
        await world.status(rnd.choice(world.agents), status)
    elif op < 0.96:
        agent = rnd.choice(world.agents)
        async with db.reader() as session:
            load = (await session.get(type(agent), agent.id)).load
        await world.update(
            agent, capacity=rnd.randint(max(load, 1), 4), weight=rnd.choice([1, 2, 3])
        )
    else:
        open_items = await _references(db, "waiting", "offered", "assigned")
        if open_items:
            await world.cancel(rnd.choice(open_items))


@settings(
    max_examples=5,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**32 - 1))
async def test_any_history_replays_to_its_real_owners(database, clock, seed):
    await _reset(database)
    clock.set(clock.now() + timedelta(days=1))
    world = World(database, clock)
    end = await random_history(world, random.Random(seed))
    for start, stop in ((0, end), (end // 3, end), (end // 4, end // 2)):
        assert_reproduced(await world.simulate(start, stop))
