"""Routing engine scenarios through the public service functions, on both databases."""

from __future__ import annotations

import pytest

from allot.contexts.routing import service
from allot.contexts.routing.models import Agent
from allot.kernel.errors import Conflict

from .helpers import (
    agent,
    assert_invariants,
    complete,
    items,
    make_agent,
    make_queue,
    set_status,
    submit,
)


async def test_least_loaded_spreads_work_and_never_overruns_capacity(database, clock):
    await make_queue(database)
    agents = [await make_agent(database, capacity=2) for _ in range(3)]
    results = [await submit(database) for _ in range(7)]
    assert [r.state for r in results] == ["assigned"] * 6 + ["waiting"]
    loads = sorted([(await agent(database, a.id)).load for a in agents])
    assert loads == [2, 2, 2]
    # consecutive items never go to the same agent while others are less loaded
    assert len({r.agent_id for r in results[:3]}) == 3
    await assert_invariants(database)


async def test_freed_capacity_takes_the_waiting_item_at_once(database, clock):
    await make_queue(database)
    anna = await make_agent(database, capacity=1)
    first = await submit(database, reference="lead:1")
    low = await submit(database, reference="lead:2", priority=0)
    clock.advance(5)
    high = await submit(database, reference="lead:3", priority=5)
    assert (low.state, high.state) == ("waiting", "waiting")
    await complete(database, "lead:1")
    by_ref = {i.reference: i for i in await items(database)}
    assert by_ref["lead:1"].state == "completed"
    # priority first, then age: the later high-priority item goes before the older one
    assert by_ref["lead:3"].state == "assigned"
    assert by_ref["lead:3"].owner_agent_id == anna.id == first.agent_id
    assert by_ref["lead:2"].state == "waiting"
    await assert_invariants(database)


async def test_an_agent_coming_online_takes_the_backlog(database, clock):
    await make_queue(database)
    boris = await make_agent(database, capacity=3, status="offline")
    for n in range(4):
        clock.advance(1)
        assert (await submit(database, reference=f"lead:{n}")).state == "waiting"
    await set_status(database, boris.id, "available")
    states = [i.state for i in await items(database)]
    assert states == ["assigned", "assigned", "assigned", "waiting"]  # oldest first
    await assert_invariants(database)


async def test_the_backlog_head_is_chosen_across_all_of_an_agents_queues(database, clock):
    await make_queue(database, work_kinds=["lead"])
    await make_queue(database, work_kinds=["call"])
    vera = await make_agent(database, capacity=2, status="offline")
    await submit(database, kind="lead", reference="lead:old-low", priority=0)
    clock.advance(1)
    await submit(database, kind="call", reference="call:new-high", priority=5)
    clock.advance(1)
    await submit(database, kind="lead", reference="lead:newer-low", priority=0)
    await set_status(database, vera.id, "available")
    by_ref = {i.reference: i for i in await items(database)}
    # priority first (from the other queue), then the older of the equal ones
    assert by_ref["call:new-high"].owner_agent_id == vera.id
    assert by_ref["lead:old-low"].owner_agent_id == vera.id
    assert by_ref["lead:newer-low"].state == "waiting"
    await assert_invariants(database)


async def test_nobody_unavailable_or_outside_the_queue_gets_work(database, clock):
    await make_queue(database, member_expression='"loans" in skills and region == "msk"')
    away = await make_agent(database, status="away", attributes={"region": "msk"})
    offline = await make_agent(database, status="offline", attributes={"region": "msk"})
    other_region = await make_agent(database, attributes={"region": "kzn"})
    no_skill = await make_agent(database, skills=["cards"], attributes={"region": "msk"})
    fit = await make_agent(database, attributes={"region": "msk"})
    results = [await submit(database) for _ in range(3)]
    assert [r.agent_id for r in results[:2]] == [fit.id, fit.id]
    assert results[2].state == "waiting"
    for other in (away, offline, other_region, no_skill):
        assert (await agent(database, other.id)).load == 0


async def test_team_membership_admits_agents_without_matching_attributes(database, clock):
    await make_queue(database, member_expression="", member_teams=["Продажи Казань"])
    kazan = await make_agent(database, skills=[], teams=["Продажи Казань"])
    await make_agent(database, skills=["loans"], teams=["Продажи Москва"])
    result = await submit(database)
    assert result.agent_id == kazan.id


@pytest.mark.parametrize("strategy", ["round_robin", "least_loaded", "longest_idle"])
async def test_equal_agents_share_work_evenly_without_list_order_bias(database, clock, strategy):
    await make_queue(database, strategy=strategy)
    agents = [await make_agent(database, capacity=1) for _ in range(4)]
    counts = {a.id: 0 for a in agents}
    for n in range(40):
        clock.advance(1)
        result = await submit(database, reference=f"lead:{n}")
        counts[result.agent_id] += 1
        await complete(database, f"lead:{n}")
    assert sorted(counts.values()) == [10, 10, 10, 10]


async def test_most_available_prefers_spare_capacity(database, clock):
    await make_queue(database, strategy="most_available")
    small = await make_agent(database, capacity=2)
    big = await make_agent(database, capacity=6)
    placed = [(await submit(database)).agent_id for _ in range(5)]
    assert placed[:4] == [big.id] * 4  # spare 6,5,4,3 > 2
    assert small.id in placed


async def test_score_strategy_uses_the_registered_scorer(database, clock):
    await make_queue(database, strategy="score", scorer="language_match")
    await make_agent(database, languages=["ru"])
    tatar = await make_agent(database, languages=["ru", "tt"])
    result = await submit(database, attributes={"language": "tt"})
    assert result.agent_id == tatar.id


async def test_capacity_per_work_kind_is_respected(database, clock):
    await make_queue(database, work_kinds=["lead", "callback"])
    anna = await make_agent(database, capacity=5, capacity_by_kind={"callback": 1})
    assert (await submit(database, kind="callback")).agent_id == anna.id
    assert (await submit(database, kind="callback")).state == "waiting"
    assert (await submit(database, kind="lead")).agent_id == anna.id
    await assert_invariants(database)


async def test_a_kind_cap_holds_and_frees_in_the_backlog_pass(database, clock):
    """Releases and backlog reservations of an agent with a per-kind cap: an uncapped kind's
    release leaves the cap alone and the capped item waiting; the capped kind's release takes
    the next one of that kind from the backlog (the cap read with the backlog head)."""
    from sqlalchemy import select

    from allot.contexts.routing.models import AgentKindLoad

    async def callback_load() -> int:
        async with database.reader() as session:
            return await session.scalar(
                select(AgentKindLoad.load).where(
                    AgentKindLoad.agent_id == anna.id, AgentKindLoad.kind == "callback"
                )
            )

    await make_queue(database, work_kinds=["lead", "callback"])
    anna = await make_agent(database, capacity=5, capacity_by_kind={"callback": 1})
    assert (await submit(database, kind="callback", reference="cb:1")).agent_id == anna.id
    assert (await submit(database, kind="callback", reference="cb:2")).state == "waiting"
    assert (await submit(database, kind="lead", reference="lead:1")).agent_id == anna.id
    await complete(database, "lead:1")  # room for 4 more, none of them a callback
    by_ref = {i.reference: i for i in await items(database)}
    assert by_ref["cb:2"].state == "waiting"
    assert ((await agent(database, anna.id)).load, await callback_load()) == (1, 1)
    await complete(database, "cb:1")
    by_ref = {i.reference: i for i in await items(database)}
    assert by_ref["cb:2"].owner_agent_id == anna.id
    assert ((await agent(database, anna.id)).load, await callback_load()) == (1, 1)
    await assert_invariants(database)


async def test_daily_quota_stops_assignments_until_the_next_day(database, clock):
    await make_queue(database)
    anna = await make_agent(database, capacity=10, daily_quota=2)
    for n in range(2):
        await submit(database, reference=f"lead:{n}")
        await complete(database, f"lead:{n}")
    assert (await submit(database, reference="lead:late")).state == "waiting"
    clock.advance(24 * 3600)
    await set_status(database, anna.id, "away")
    await set_status(database, anna.id, "available")  # a new day: the backlog moves again
    by_ref = {i.reference: i for i in await items(database)}
    assert by_ref["lead:late"].owner_agent_id == anna.id


async def test_weighted_items_use_several_units(database, clock):
    await make_queue(database)
    anna = await make_agent(database, capacity=3)
    assert (await submit(database, weight=2)).agent_id == anna.id
    assert (await submit(database, weight=2)).state == "waiting"
    assert (await submit(database, weight=1)).agent_id == anna.id
    assert (await agent(database, anna.id)).load == 3
    await assert_invariants(database)


async def test_a_bad_member_expression_names_the_position(database):
    from allot.kernel.errors import ValidationFailed

    with pytest.raises(ValidationFailed) as failure:
        await make_queue(database, member_expression='"loans" in in skills')
    error = failure.value.errors[0]
    assert error.field == "body.member_expression"
    assert "position 12" in error.message


async def test_capacity_cannot_be_lowered_below_held_work(database, clock):
    from allot.contexts.routing import agent_service
    from allot.contexts.routing.schemas import AgentUpdate
    from allot.kernel.errors import ValidationFailed

    await make_queue(database)
    anna = await make_agent(database, capacity=3)
    await submit(database)
    await submit(database)
    with pytest.raises(ValidationFailed):
        async with database.transaction() as session:
            await agent_service.update_agent(session, anna.id, AgentUpdate(capacity=1))
    assert isinstance(await agent(database, anna.id), Agent)


async def test_freed_capacity_skips_declined_and_too_heavy_items_across_queues(database, clock):
    from allot.contexts.routing import service

    await make_queue(database, work_kinds=["lead"], offer_mode="offer")
    await make_queue(database, work_kinds=["call"])
    vera = await make_agent(database, capacity=1)
    declined = await submit(database, kind="lead", reference="lead:declined", priority=9)
    assert declined.state == "offered"
    clock.advance(1)
    await submit(database, kind="call", reference="call:heavy", priority=5, weight=2)
    clock.advance(1)
    await submit(database, kind="call", reference="call:new", priority=1)
    clock.advance(1)
    await submit(database, kind="call", reference="call:newer", priority=1)
    async with database.transaction() as session:
        await service.decline_offer(session, declined.offer_ids[0], vera.id)
    by_ref = {i.reference: i for i in await items(database)}
    # The declined item (I3) and the one heavier than the freed unit stay; of the rest, the
    # older of equal priority is taken.
    assert by_ref["call:new"].owner_agent_id == vera.id
    assert [by_ref[r].state for r in ("lead:declined", "call:heavy", "call:newer")] == [
        "waiting"
    ] * 3
    await assert_invariants(database)


async def test_the_backlog_head_is_read_from_its_index_in_any_plan(database, clock):
    """The head probe's plan walks `ix_routing_items_waiting` from its head, also as the generic
    plan PostgreSQL switches a prepared statement to (asyncpg prepares every statement): there a
    parameter for `state` hid the partial index and the whole backlog was read and sorted."""
    from datetime import timedelta

    from sqlalchemy import event, insert

    from allot.contexts.routing import backlog_probe, repository
    from allot.kernel.clock import utcnow
    from allot.kernel.ids import new_id

    queue = await make_queue(database)
    anna = await make_agent(database, capacity=1)
    start = utcnow()
    backlog = [
        {
            "id": new_id(), "reference": f"bulk:{n}", "kind": "lead", "attributes": {},
            "priority": n % 4, "weight": 1, "queue_id": queue.id, "state": "waiting",
            "created_at": start, "enqueued_at": start + timedelta(seconds=n), "times_routed": 0,
        }
        for n in range(2_000)
    ]  # fmt: skip
    async with database.transaction() as session:
        await session.execute(insert(repository.ITEMS), backlog)
    executed: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:
        executed.append((statement, parameters))

    engine = database.write_engine.sync_engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        async with database.transaction() as session:
            head = await backlog_probe.next_backlog_item(session, anna.id, 1)
            assert head is not None
            assert head.id == backlog[3]["id"]  # priority 3, the oldest
            statement, parameters = next(
                (s, p) for s, p in executed if "ORDER BY" in s and "routing_work_items" in s
            )
            conn = await session.connection()
            if database.is_sqlite:
                rows = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
                plan = "\n".join(str(row[-1]) for row in rows)
                assert "TEMP B-TREE" not in plan, plan
            else:
                await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
                await conn.exec_driver_sql(f"PREPARE backlog_head AS {statement}")
                values = ", ".join(f"'{value}'" for value in parameters)
                rows = await conn.exec_driver_sql(f"EXPLAIN EXECUTE backlog_head({values})")
                plan = "\n".join(str(row[0]) for row in rows)
                await conn.exec_driver_sql("DEALLOCATE backlog_head")
                assert "Index Scan using ix_routing_items_waiting" in plan, plan
            assert "ix_routing_items_waiting" in plan, plan
            assert "ix_routing_items_state" not in plan, plan
    finally:
        event.remove(engine, "before_cursor_execute", capture)


@pytest.mark.parametrize("room", [True, False], ids=["an agent has room", "nobody has room"])
async def test_a_reference_submitted_twice_is_a_conflict_that_holds_nothing(database, clock, room):
    """A new item is written once routed (assigned at once, or waiting): the duplicate's
    reservation, if it made one, is given back even by a caller that goes on after the
    Conflict."""
    await make_queue(database)
    anna = await make_agent(database, capacity=2 if room else 1)
    first = await submit(database, reference="lead:twice")
    assert first.state == "assigned"
    async with database.transaction() as session:
        with pytest.raises(Conflict, match="already submitted"):
            await service.submit(session, reference="lead:twice", kind="lead")
        # the caller goes on and commits what it did besides
    assert (await agent(database, anna.id)).load == 1
    stored = await items(database)
    assert [(i.reference, i.state, i.owner_agent_id) for i in stored] == [
        ("lead:twice", "assigned", anna.id)
    ]
    await assert_invariants(database)
    assert (await submit(database, reference="lead:other")).state == (
        "assigned" if room else "waiting"
    )
