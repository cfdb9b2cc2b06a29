"""What a decision says about who was left out: never the agent it chose or ranked (the pool
snapshot is read after the decision's own reservation, when that agent may be full), and the
members a rule's requirement excludes, with that reason."""

from __future__ import annotations

import pytest

from allot.contexts.routing import placement, rule_service
from allot.contexts.routing.rule_schemas import RuleSetCreate
from allot.contexts.routing.rules import RuleSetDefinition

from .helpers import make_agent, make_queue, submit
from .test_decisions import decisions, manager_headers


@pytest.mark.parametrize("offer_mode", ["direct", "offer"])
async def test_the_chosen_agent_filled_by_this_item_is_not_listed_as_left_out(
    database, clock, client, offer_mode
) -> None:
    await make_queue(database, name="Loans", offer_mode=offer_mode)
    await make_agent(database, name="Anna", capacity=1)
    await make_agent(database, name="Boris", status="offline")

    result = await submit(database, reference="lead:1")

    assert result.state == ("assigned" if offer_mode == "direct" else "offered")
    [decision] = await decisions(client, await manager_headers(database), reference="lead:1")
    assert [a["name"] for a in decision["agents"]] == ["Anna"]
    assert {e["agent"]["name"]: e["reasons"] for e in decision["excluded"]} == {
        "Boris": ["offline"]
    }


async def test_a_batch_fills_two_agents_and_each_decision_leaves_out_only_the_others(
    database, clock, client
) -> None:
    await make_queue(database, name="Loans")
    await make_agent(database, name="Anna", capacity=1)
    await make_agent(database, name="Carl", capacity=1)
    await make_agent(database, name="Boris", status="offline")
    async with database.transaction() as session:
        await placement.submit_many(
            session,
            [placement.NewItem(reference=f"lead:{n}", kind="lead") for n in range(3)],
        )

    headers = await manager_headers(database)
    owners = {}
    for n in range(3):
        [decision] = await decisions(client, headers, reference=f"lead:{n}")
        chosen = {a["name"] for a in decision["agents"]}
        left_out = {e["agent"]["name"] for e in decision["excluded"]}
        assert not chosen & left_out, decision
        assert "Boris" in left_out
        owners[n] = chosen
    # Two items placed (one per agent), the third waits with both agents full.
    assert sorted(len(c) for c in owners.values()) == [0, 1, 1]


async def test_a_member_lacking_the_rules_requirement_is_left_out_for_it(database, clock, client):
    """The "skill" exclusion: a rule's `require` routes to a derived queue, and the base queue's
    members who do not meet it are listed as left out, not silently absent."""
    await make_queue(database, name="Loans")
    await make_agent(database, name="Anna", skills=["loans"])
    await make_agent(database, name="Boris", skills=["loans", "big_loans"])
    await make_agent(database, name="Carl", skills=["loans", "big_loans"], status="offline")
    await make_agent(database, name="Dora", skills=["cards"])  # not in Loans at all
    big = {"name": "big", "queue": "Loans", "require": "'big_loans' in skills"}
    async with database.transaction() as session:
        await rule_service.create_rule_set(
            session,
            RuleSetCreate(
                name="big", definition=RuleSetDefinition.model_validate({"filters": [big]}),
                activate=True,
            ),
        )  # fmt: skip

    result = await submit(database, reference="lead:big")

    assert result.state == "assigned"
    [decision] = await decisions(client, await manager_headers(database), reference="lead:big")
    assert [a["name"] for a in decision["agents"]] == ["Boris"]
    assert {e["agent"]["name"]: e["reasons"] for e in decision["excluded"]} == {
        "Anna": ["not_member"],
        "Carl": ["offline"],
    }
