"""Set-based placement (`routing.submit_many`): the same outcome as submitting one by one."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from allot.contexts import routing
from allot.contexts.routing import events
from allot.contexts.routing.models import WorkItem
from allot.kernel.db import Database
from allot.kernel.events import OutboxEvent
from allot.kernel.timers import Timer, TimerRunner

from .helpers import agent, assert_invariants, items, make_agent, make_queue, submit
from .test_invariants import _reset

_refs = itertools.count(1)


def new_items(count: int, **fields):
    return [
        routing.NewItem(reference=f"batch:{next(_refs)}", kind="lead", **fields)
        for _ in range(count)
    ]


async def submit_in_one(database: Database, batch):
    async with database.transaction() as session:
        return await routing.submit_many(session, batch)


async def test_a_batch_spreads_over_the_least_loaded_as_one_by_one_would(database, clock):
    await make_queue(database)
    agents = [await make_agent(database, capacity=10) for _ in range(4)]
    await submit(database)  # one agent starts with one item
    results = await submit_in_one(database, new_items(11))
    assert [r.state for r in results] == ["assigned"] * 11
    loads = sorted([(await agent(database, a.id)).load for a in agents])
    assert loads == [3, 3, 3, 3]  # 12 items over 4 agents, the busy one got one fewer
    await assert_invariants(database)


async def test_round_robin_gives_the_next_item_to_the_least_recently_assigned(database, clock):
    await make_queue(database, strategy="round_robin")
    agents = [await make_agent(database, capacity=10) for _ in range(3)]
    results = await submit_in_one(database, new_items(6))
    per_agent = Counter(r.agent_id for r in results)
    assert sorted(per_agent.values()) == [2, 2, 2]
    assert set(per_agent) == {a.id for a in agents}


async def test_what_does_not_fit_waits_and_the_most_urgent_is_placed_first(database, clock):
    await make_queue(database)
    [anna] = [await make_agent(database, capacity=2)]
    batch = [
        routing.NewItem(reference=f"batch:{next(_refs)}", kind="lead", priority=p)
        for p in (0, 5, 1)
    ]
    results = await submit_in_one(database, batch)
    assert [r.state for r in results] == ["waiting", "assigned", "assigned"]
    assert (await agent(database, anna.id)).load == 2
    async with database.reader() as session:
        waiting = await session.scalars(
            select(OutboxEvent).where(OutboxEvent.type == events.ITEM_WAITING)
        )
        assert [e.payload["reference"] for e in waiting] == [batch[0].reference]
    await assert_invariants(database)


async def test_daily_quotas_hold_for_several_items_at_once(database, clock):
    await make_queue(database)
    first = await make_agent(database, capacity=10, daily_quota=1)
    second = await make_agent(database, capacity=10, daily_quota=1)
    results = await submit_in_one(database, new_items(3))
    assert sorted(r.state for r in results) == ["assigned", "assigned", "waiting"]
    assert {r.agent_id for r in results if r.agent_id} == {first.id, second.id}
    assert (await agent(database, first.id)).assigned_in_day == 1
    assert (await agent(database, second.id)).assigned_in_day == 1


async def test_offer_mode_queues_get_offers_as_with_submit(database, clock):
    await make_queue(database, offer_mode="offer")
    await make_agent(database, capacity=3)
    results = await submit_in_one(database, new_items(2))
    assert [r.state for r in results] == ["offered", "offered"]
    assert all(len(r.offer_ids) == 1 for r in results)
    await assert_invariants(database)


async def test_per_kind_caps_are_kept(database, clock):
    await make_queue(database)
    capped = await make_agent(database, capacity=10, capacity_by_kind={"lead": 1})
    results = await submit_in_one(database, new_items(3))
    assert [r.state for r in results].count("assigned") == 1
    assert (await agent(database, capped.id)).load == 1
    await assert_invariants(database)


async def test_each_assignment_gets_its_event_and_first_response_timer(database, clock):
    await make_queue(database, first_response_seconds=600)
    await make_agent(database, capacity=5)
    results = await submit_in_one(database, new_items(2))
    async with database.reader() as session:
        assigned = list(
            await session.scalars(
                select(OutboxEvent).where(OutboxEvent.type == events.ITEM_ASSIGNED)
            )
        )
        timers = list(await session.scalars(select(Timer).where(Timer.key.like("frt:%"))))
        stored = list(await session.scalars(select(WorkItem)))
    assert {e.payload["item_id"] for e in assigned} == {str(r.item_id) for r in results}
    assert {e.payload["via"] for e in assigned} == {"direct"}
    assert {t.key for t in timers} == {f"frt:{r.item_id}" for r in results}
    assert {t.due_at for t in timers} == {clock.now() + timedelta(seconds=600)}
    assert {i.times_routed for i in stored} == {1}


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    capacities=st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=5),
    priorities=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=12),
)
async def test_a_batch_ends_like_the_same_items_submitted_one_by_one(
    database, clock, capacities, priorities
):
    """Compared on what the strategy decides: the loads it leaves and which items wait. Which of
    two equally loaded agents gets an item is a random draw, so agents are not compared."""
    outcomes = []
    for mode in ("batch", "one_by_one"):
        await _reset(database)
        await make_queue(database)
        agents = [await make_agent(database, capacity=c) for c in capacities]
        batch = [
            routing.NewItem(reference=f"cmp:{mode}:{n}", kind="lead", priority=p)
            for n, p in enumerate(priorities)
        ]
        if mode == "batch":
            results = await submit_in_one(database, batch)
        else:
            order = sorted(range(len(batch)), key=lambda n: (-batch[n].priority, n))
            placed = {}
            for n in order:
                placed[n] = await submit(
                    database, reference=batch[n].reference, priority=batch[n].priority
                )
            results = [placed[n] for n in range(len(batch))]
        loads = sorted([(await agent(database, a.id)).load for a in agents])
        outcomes.append((loads, [r.state for r in results]))
        await assert_invariants(database)
    assert outcomes[0] == outcomes[1]


async def test_concurrent_batches_never_overrun_capacity(database, clock):
    await make_queue(database)
    await asyncio.gather(*(make_agent(database, capacity=3) for _ in range(4)))
    # 8 batches of 3 for 12 places: whatever the interleaving, 12 assigned and 12 waiting.
    await asyncio.gather(*(submit_in_one(database, new_items(3)) for _ in range(8)))
    # A batch that found an agent busy in another one left it a backlog pass (a timer due now).
    await TimerRunner(database).fire_due()
    stored = await items(database)
    assert Counter(item.state for item in stored) == {"assigned": 12, "waiting": 12}
    await assert_invariants(database)


async def test_a_heavy_item_that_fits_nowhere_waits_and_a_lighter_one_behind_it_is_placed(
    database, clock
):
    await make_queue(database)
    # More members than the plan reads (2 items + 5): the heavy item is decided by `submit`.
    small = [await make_agent(database, capacity=1) for _ in range(8)]
    roomy = await make_agent(database, capacity=2)
    batch = [
        routing.NewItem(reference=f"batch:{next(_refs)}", kind="lead", weight=3, priority=5),
        routing.NewItem(reference=f"batch:{next(_refs)}", kind="lead", weight=2),
    ]
    results = await submit_in_one(database, batch)
    assert [(r.state, r.agent_id) for r in results] == [("waiting", None), ("assigned", roomy.id)]
    assert [(await agent(database, a.id)).load for a in small] == [0] * len(small)
    await assert_invariants(database)


async def test_an_agent_busy_in_another_transaction_is_skipped_then_gets_its_backlog_pass(
    database, clock
):
    import pytest
    from sqlalchemy import text

    if database.dialect != "postgresql":
        pytest.skip("row locks are PostgreSQL's (SQLite has one writer)")
    await make_queue(database)
    busy = await make_agent(database, capacity=2)
    async with database.transaction() as holder:  # another transaction placing work with it
        await holder.execute(
            text("SELECT id FROM routing_agents WHERE id = :id FOR UPDATE"), {"id": busy.id}
        )
        results = await submit_in_one(database, new_items(2))
    assert [r.state for r in results] == ["waiting", "waiting"]  # not blocked behind the lock
    async with database.reader() as session:
        timer = (
            await session.scalars(select(Timer).where(Timer.key == f"backlog:{busy.id}"))
        ).one()
    assert timer.due_at == clock.now()
    await TimerRunner(database).fire_due()
    assert {i.state for i in await items(database)} == {"assigned"}
    assert (await agent(database, busy.id)).load == 2
