"""Rules' `require` and the "relax a skill" time step (issue 4): a filter with `require` sends the
item to a derived queue (the filter queue's members who also satisfy the expression); a step
with `relax` moves it to the base queue, logged as an `escalated` decision. On both databases,
by moving the clock."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from allot.contexts.routing import rule_service, rule_texts
from allot.contexts.routing.models import Decision, Queue, QueueMember
from allot.contexts.routing.rule_schemas import DryRunRequest, RuleSetCreate
from allot.contexts.routing.rules import RuleSetDefinition, check_definition
from allot.kernel.errors import ValidationFailed
from allot.kernel.i18n import locale_var

from .helpers import assert_invariants, items, make_agent, make_queue, set_status, submit
from .test_rules import events, fire

BIG = {
    "name": "big", "when": "amount_minor >= 50000000", "queue": "Loans",
    "require": "'big_loans' in skills", "ttl_seconds": 3600,
    "steps": [{"after_seconds": 60, "notify": ["manager"]},
              {"after_seconds": 300, "relax": True, "raise_priority": 2}],
}  # fmt: skip


async def save(database, *, activate: bool = True, **fields):
    async with database.transaction() as session:
        return await rule_service.create_rule_set(
            session,
            RuleSetCreate(
                name="relax", definition=RuleSetDefinition.model_validate(fields), activate=activate
            ),
        )


def test_require_and_relax_are_checked_naming_field_and_position() -> None:
    rules = RuleSetDefinition.model_validate(
        {
            "filters": [
                {**BIG, "require": "'big_loans' in in skills"},
                {"name": "plain", "queue": "Loans", "steps": [{"after_seconds": 9, "relax": True}]},
            ]
        }
    )
    with pytest.raises(ValidationFailed) as failure:
        check_definition(rules, {"Loans"})
    fields = {e.field: (e.code, e.message) for e in failure.value.errors}
    assert set(fields) == {
        "body.definition.filters.0.require",
        "body.definition.filters.1.steps.0.relax",
    }
    assert fields["body.definition.filters.0.require"][0] == "expression_syntax"
    assert "position" in fields["body.definition.filters.0.require"][1]
    assert fields["body.definition.filters.1.steps.0.relax"][0] == "nothing_to_relax"
    # A step that only relaxes does something.
    RuleSetDefinition.model_validate(
        {"filters": [{**BIG, "steps": [{"after_seconds": 5, "relax": True}]}]}
    )


async def test_saving_sets_up_the_derived_queue_once(database, clock) -> None:
    loans = await make_queue(database, name="Loans", strategy="round_robin")
    anna = await make_agent(database, name="Anna", skills=["loans"])
    boris = await make_agent(database, name="Boris", skills=["loans", "big_loans"])
    await make_agent(database, name="Carl", skills=["big_loans"])  # not in Loans at all
    await save(database, activate=False, filters=[BIG])
    await save(database, filters=[BIG])  # the same require again: no second queue
    async with database.reader() as session:
        derived = (
            await session.execute(select(Queue).where(Queue.base_queue_id == loans.id))
        ).scalars().all()  # fmt: skip
        assert len(derived) == 1
        members = set(
            (
                await session.execute(
                    select(QueueMember.agent_id).where(QueueMember.queue_id == derived[0].id)
                )
            ).scalars()
        )
    assert members == {boris.id}
    assert derived[0].require_expression == "'big_loans' in skills"
    assert (derived[0].strategy, derived[0].work_kinds) == ("round_robin", ["lead"])
    assert derived[0].name == "Loans ⟨'big_loans' in skills⟩"
    # A new agent with the skill joins it; small loans still go to the whole queue.
    dina = await make_agent(database, name="Dina", skills=["loans", "big_loans"])
    async with database.reader() as session:
        count = await session.scalar(
            select(QueueMember.agent_id).where(
                QueueMember.queue_id == derived[0].id, QueueMember.agent_id == dina.id
            )
        )
    assert count == dina.id
    small = await submit(database, attributes={"amount_minor": 100})
    stored = {i.id: i for i in await items(database)}
    assert stored[small.item_id].queue_id == loans.id
    assert small.agent_id in (anna.id, boris.id, dina.id)


async def test_a_relax_step_widens_to_the_base_queue_by_moving_the_clock(database, clock) -> None:
    loans = await make_queue(database, name="Loans")
    anna = await make_agent(database, name="Anna", skills=["loans"])
    boris = await make_agent(database, name="Boris", skills=["loans", "big_loans"])
    await set_status(database, boris.id, "away")
    await save(database, filters=[BIG])
    big = await submit(database, attributes={"amount_minor": 60000000})
    assert big.state == "waiting"  # Anna is free but lacks the skill
    item = (await items(database))[0]
    assert item.queue_id != loans.id
    clock.advance(60)
    await fire(database)  # the notify step: still waiting in the derived queue
    assert (await items(database))[0].state == "waiting"
    clock.advance(239)
    await fire(database)  # (presence checks may be due; the relax step is not)
    assert ((await items(database))[0].state, (await items(database))[0].queue_id) == (
        "waiting", item.queue_id
    )  # fmt: skip
    clock.advance(1)
    await fire(database)  # 300 s: relaxed to Loans, where Anna takes it
    stored = (await items(database))[0]
    assert (stored.state, stored.owner_agent_id, stored.queue_id) == ("assigned", anna.id, loans.id)
    assert stored.priority == 2
    async with database.reader() as session:
        decisions = (
            await session.execute(
                select(Decision).where(Decision.item_id == item.id).order_by(Decision.occurred_at)
            )
        ).scalars().all()  # fmt: skip
    assert [(d.trigger, d.outcome) for d in decisions] == [
        ("submitted", "waiting"), ("escalated", "assigned")
    ]  # fmt: skip
    assert decisions[1].queue_id == loans.id
    assert decisions[1].agent_ids == [str(anna.id)]
    relaxed = [e for e in await events(database, "routing.item.escalated") if e.get("relaxed")]
    assert len(relaxed) == 1
    assert relaxed[0]["moved_to"] == "Loans"
    await assert_invariants(database)


async def test_a_skilled_agent_coming_back_takes_it_before_the_relax(database, clock) -> None:
    await make_queue(database, name="Loans")
    await make_agent(database, name="Anna", skills=["loans"])
    boris = await make_agent(database, name="Boris", skills=["loans", "big_loans"])
    await set_status(database, boris.id, "away")
    await save(database, filters=[BIG])
    big = await submit(database, attributes={"amount_minor": 60000000})
    clock.advance(100)
    await set_status(database, boris.id, "available")  # the backlog pass of the derived queue
    stored = (await items(database))[0]
    assert (stored.id, stored.state, stored.owner_agent_id) == (big.item_id, "assigned", boris.id)
    clock.advance(300)
    await fire(database)  # owned: the relax step never applies
    assert (await items(database))[0].owner_agent_id == boris.id


async def test_the_dry_run_and_the_plain_words_show_require_and_relax(database, clock) -> None:
    await make_queue(database, name="Loans")
    boris = await make_agent(database, name="Boris", skills=["loans", "big_loans"])
    rule_set = await save(database, filters=[BIG])
    async with database.reader() as session:
        dry = await rule_service.dry_run(
            session,
            DryRunRequest(
                rule_set_id=rule_set.id,
                item={"kind": "lead", "attributes": {"amount_minor": 60000000}},
            ),
        )
    assert dry["queue"] == "Loans ⟨'big_loans' in skills⟩"
    assert dry["would_get"]["id"] == boris.id
    assert [s["does"] for s in dry["steps"]] == ["notify manager", "priority +2, relax require"]
    token = locale_var.set("en")
    try:
        view = rule_texts.filter_view(RuleSetDefinition.model_validate({"filters": [BIG]}), 0)
    finally:
        locale_var.reset(token)
    assert view.require == "'big_loans' in skills"
    assert "relax the requirement" in view.steps[1].does
