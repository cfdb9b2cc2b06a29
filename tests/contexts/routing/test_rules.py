"""Routing rules: validation with positions, first-match filters, time steps, TTL, ageing and the
nobody-available policies, on both databases, by moving the clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from allot.contexts.routing import rule_service
from allot.contexts.routing.models import Decision, WorkItem
from allot.contexts.routing.rule_schemas import RuleSetCreate
from allot.contexts.routing.rules import (
    RuleSetDefinition,
    aged_priority,
    ageing_ticks,
    check_definition,
    first_match,
    item_facts,
    next_due,
)
from allot.kernel.errors import ValidationFailed
from allot.kernel.events.models import OutboxEvent
from allot.kernel.timers import TimerRunner

from .helpers import assert_invariants, items, make_agent, make_queue, set_status, submit


def definition(**fields) -> RuleSetDefinition:
    return RuleSetDefinition.model_validate(fields)


def test_a_bad_expression_is_refused_naming_the_filter_and_the_position() -> None:
    rules = definition(
        filters=[
            {"name": "ok", "when": 'source == "site"', "queue": "Loans"},
            {"name": "broken", "when": "amount_minor >= = 5", "queue": "Loans"},
            {"name": "nowhere", "when": "", "queue": "Mars"},
        ]
    )
    with pytest.raises(ValidationFailed) as failure:
        check_definition(rules, {"Loans"})
    fields = {e.field: e.message for e in failure.value.errors}
    assert set(fields) == {"body.definition.filters.1.when", "body.definition.filters.2.queue"}
    assert "position 17" in fields["body.definition.filters.1.when"]
    assert "Mars" in fields["body.definition.filters.2.queue"]


@pytest.mark.parametrize(
    "bad",
    [
        {
            "steps": [
                {"after_seconds": 60, "notify": ["manager"]},
                {"after_seconds": 30, "priority": 1},
            ]
        },
        {"steps": [{"after_seconds": 60}]},  # does nothing
        {"ttl_seconds": 60, "steps": [{"after_seconds": 60, "notify": ["manager"]}]},
        {"when_nobody_available": "fallback"},  # without a fallback queue
        {"fallback_queue": "B"},  # a fallback queue without the policy
    ],
)
def test_inconsistent_filters_are_refused(bad) -> None:
    with pytest.raises(ValueError):
        definition(filters=[{"name": "f", "queue": "A", **bad}])


def test_the_first_matching_filter_wins_and_type_mismatches_do_not_match() -> None:
    rules = definition(
        filters=[
            {"name": "big", "when": "amount_minor >= 50000000", "queue": "Senior"},
            {"name": "site", "when": 'source == "site"', "queue": "Site"},
            {"name": "rest", "queue": "General"},
        ]
    )
    assert first_match(rules, item_facts("lead", 0, 1, {"amount_minor": 90000000})) == 0
    # a string amount cannot be compared with a number: that filter does not match
    assert (
        first_match(rules, item_facts("lead", 0, 1, {"amount_minor": "x", "source": "site"})) == 1
    )
    assert first_match(rules, item_facts("lead", 0, 1, {})) == 2
    assert first_match(definition(filters=[]), item_facts("lead", 0, 1, {})) is None


@given(
    priority=st.integers(0, 50),
    every=st.integers(1, 600),
    raise_by=st.integers(1, 5),
    up_to=st.integers(1, 60),
    ages=st.lists(st.integers(0, 5000), min_size=1, max_size=6),
)
def test_ageing_raises_priority_by_period_never_past_the_ceiling(
    priority, every, raise_by, up_to, ages
) -> None:
    """Ticks applied piecemeal (as timers fire) give the same priority as all at once."""
    rules = definition(ageing={"every_seconds": every, "raise_by": raise_by, "up_to": up_to})
    since, current = 0.0, priority
    for age in sorted(ages):
        ticks = ageing_ticks(rules, since, age)
        current = aged_priority(rules, current, ticks)
        since += ticks * every
    final = sorted(ages)[-1]
    expected = priority if priority >= up_to else min(up_to, priority + raise_by * (final // every))
    assert current == expected


def test_next_due_is_the_earliest_of_step_ageing_and_ttl() -> None:
    rules = definition(
        filters=[
            {
                "name": "f", "queue": "A", "ttl_seconds": 900,
                "steps": [{"after_seconds": 60, "notify": ["manager"]},
                          {"after_seconds": 300, "queue": "B"}],
            }
        ],
        ageing={"every_seconds": 200, "up_to": 5},
    )  # fmt: skip
    assert next_due(rules, 0, steps_done=0, priority=0, ageing_since=0) == 60
    assert next_due(rules, 0, steps_done=1, priority=0, ageing_since=0) == 200
    assert next_due(rules, 0, steps_done=1, priority=0, ageing_since=200) == 300
    assert next_due(rules, 0, steps_done=2, priority=5, ageing_since=200) == 900  # at ceiling
    assert next_due(rules, None, steps_done=0, priority=5, ageing_since=0) is None


# -- live, through the engine --------------------------------------------------------------------
async def activate(database, **definition_fields):
    async with database.transaction() as session:
        return await rule_service.create_rule_set(
            session,
            RuleSetCreate(
                name="test rules", definition=definition(**definition_fields), activate=True
            ),
        )


async def fire(database) -> int:
    return await TimerRunner(database).fire_due()


async def events(database, type_: str) -> list[dict]:
    async with database.reader() as session:
        rows = await session.execute(
            select(OutboxEvent.payload).where(OutboxEvent.type == type_).order_by(OutboxEvent.id)
        )
        return list(rows.scalars())


async def test_filters_choose_the_queue_and_priority(database, clock) -> None:
    general = await make_queue(database, name="General", member_expression='"loans" in skills')
    senior = await make_queue(database, name="Senior", member_expression='"senior" in skills')
    anna = await make_agent(database, skills=["loans"])
    boris = await make_agent(database, skills=["loans", "senior"])
    await activate(
        database,
        filters=[
            {"name": "big", "when": "amount_minor >= 50000000", "queue": "Senior", "priority": 7}
        ],
    )
    big = await submit(database, attributes={"amount_minor": 60000000})
    small = await submit(database, attributes={"amount_minor": 100})
    assert big.agent_id == boris.id
    stored = {i.id: i for i in await items(database)}
    assert (stored[big.item_id].queue_id, stored[big.item_id].priority) == (senior.id, 7)
    assert stored[big.item_id].submitted_priority == 0
    assert stored[small.item_id].queue_id == general.id  # no filter matched: the kind's queue
    assert small.agent_id in (anna.id, boris.id)
    await assert_invariants(database)


async def test_time_steps_widen_notify_and_ttl_expires(database, clock) -> None:
    await make_queue(database, name="Senior", member_expression='"senior" in skills')
    await make_queue(database, name="General", member_expression='"loans" in skills')
    anna = await make_agent(database, skills=["loans"], status="offline")
    await activate(
        database,
        filters=[
            {
                "name": "vip", "when": "vip == true", "queue": "Senior", "ttl_seconds": 3600,
                "steps": [
                    {"after_seconds": 60, "notify": ["manager"]},
                    {"after_seconds": 120, "queue": "General", "raise_priority": 3,
                     "notify": ["customer"]},
                ],
            }
        ],
    )  # fmt: skip
    vip = await submit(database, attributes={"vip": True})
    other = await submit(database, attributes={"vip": True})
    assert vip.state == "waiting"  # nobody in Senior
    clock.advance(59)
    assert await fire(database) == 0
    clock.advance(1)
    await fire(database)
    escalated = await events(database, "routing.item.escalated")
    assert [e["notify"] for e in escalated] == [["manager"], ["manager"]]
    await set_status(database, anna.id, "available")  # General only: still nobody for Senior
    assert {i.state for i in await items(database)} == {"waiting"}
    clock.advance(60)
    await fire(database)  # widened to General: Anna (capacity 2) takes both now
    stored = {i.id: i for i in await items(database)}
    assert (stored[vip.item_id].state, stored[vip.item_id].priority) == ("assigned", 3)
    assert stored[vip.item_id].owner_agent_id == anna.id
    customer = [
        e for e in await events(database, "routing.item.escalated") if "customer" in e["notify"]
    ]
    assert len(customer) == 2
    clock.advance(3600)
    await fire(database)  # owned items never expire
    assert all(i.state == "assigned" for i in await items(database))
    assert other.item_id in stored
    await assert_invariants(database)


async def test_an_unowned_item_expires_at_its_ttl(database, clock) -> None:
    await make_queue(database, name="General")
    await activate(database, filters=[{"name": "all", "queue": "General", "ttl_seconds": 300}])
    result = await submit(database)
    clock.advance(299)
    await fire(database)
    assert (await items(database))[0].state == "waiting"
    clock.advance(1)
    await fire(database)
    [item] = await items(database)
    assert item.state == "expired"
    assert [e["item_id"] for e in await events(database, "routing.item.expired")] == [
        str(result.item_id)
    ]
    async with database.reader() as session:
        last = await session.scalar(
            select(Decision)
            .where(Decision.item_id == item.id)
            .order_by(Decision.occurred_at.desc(), Decision.id.desc())
        )
    assert (last.outcome, last.note) == ("expired", "ttl")


async def test_nobody_available_fallback_and_escalate(database, clock) -> None:
    await make_queue(database, name="Senior", member_expression='"senior" in skills')
    general = await make_queue(database, name="General", member_expression='"loans" in skills')
    anna = await make_agent(database, skills=["loans"])
    await activate(
        database,
        filters=[
            {"name": "fb", "when": 'tier == "a"', "queue": "Senior",
             "when_nobody_available": "fallback", "fallback_queue": "General"},
            {"name": "esc", "when": 'tier == "b"', "queue": "Senior",
             "when_nobody_available": "escalate"},
        ],
    )  # fmt: skip
    fell_back = await submit(database, attributes={"tier": "a"})
    escalated = await submit(database, attributes={"tier": "b"})
    assert fell_back.agent_id == anna.id
    assert escalated.state == "waiting"
    stored = {i.id: i for i in await items(database)}
    assert stored[fell_back.item_id].queue_id == general.id
    [event] = await events(database, "routing.item.escalated")
    assert (event["item_id"], event["reason"], event["notify"]) == (
        str(escalated.item_id),
        "nobody_available",
        ["manager"],
    )
    async with database.reader() as session:
        logged = list(
            (await session.execute(
                select(Decision.trigger, Decision.outcome, Decision.policy)
                .where(Decision.item_id == fell_back.item_id)
                .order_by(Decision.occurred_at, Decision.id)
            )).all()
        )  # fmt: skip
    assert logged == [("submitted", "waiting", "fallback"), ("fallback", "assigned", None)]


async def test_activation_keeps_one_active_version_and_history(database, clock) -> None:
    await make_queue(database, name="General")
    first = await activate(database, filters=[{"name": "a", "queue": "General"}])
    second = await activate(database, filters=[{"name": "b", "queue": "General"}])
    async with database.reader() as session:
        versions = await rule_service.list_rule_sets(session)
    assert [(v.version, v.status) for v in versions] == [(2, "active"), (1, "retired")]
    assert (first.version, second.version) == (1, 2)
    result = await submit(database)
    async with database.reader() as session:
        item = await session.get(WorkItem, result.item_id)
    assert item.rule_set_id == second.id
