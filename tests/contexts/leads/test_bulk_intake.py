"""Bulk intake: a constant number of statements per batch, customers taken in as `intake` would
take them one by one, and the bulk routing submission."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from allot.contexts import customers, leads, routing
from allot.contexts.customers.models import Contact, Customer
from allot.contexts.leads.bulk_intake import create_leads_bulk
from allot.kernel.db import Database
from tests.conftest import count_queries
from tests.contexts.routing.helpers import assert_invariants

from .helpers import events_of, lead_desk


def rows(count: int, start: int = 0, **fields: Any) -> list[leads.NewLead]:
    return [
        leads.validate_new_lead(
            leads.NewLead(
                source="csv",
                customer_name=f"Клиент {n}",
                customer_phone=f"+7 912 800-{n // 100:02d}-{n % 100:02d}",
                external_id=f"B-{n}",
                **fields,
            )
        )
        for n in range(start, start + count)
    ]


async def statements_for(database: Database, batch: list[leads.NewLead]) -> int:
    with count_queries(database) as counter:
        async with database.transaction() as session:
            result = await create_leads_bulk(session, batch)
    assert result.imported == len(batch)
    # Configuration reads (pipeline, SLA, queues) may come from a per-process cache or not.
    cached = ("leads_statuses", "leads_sla_policies", "routing_queues", "routing_rule_sets")
    return len([s for s in counter.statements if not any(t in s for t in cached)])


async def test_a_batch_costs_the_same_statements_whatever_its_size(
    database: Database, clock: Any
) -> None:
    await lead_desk(database, agents=1, capacity=1)
    await statements_for(database, rows(1, start=900))  # the agent is full from here on
    small = await statements_for(database, rows(5))
    large = await statements_for(database, rows(200, start=5))
    assert small == large
    # 14 before the decision log; it adds the pool snapshot read and the decision and snapshot
    # inserts (each one statement per batch).
    assert large <= 17


async def test_customers_follow_intakes_rules_one_by_one(database: Database, clock: Any) -> None:
    async with database.transaction() as session:
        phone_card = await customers.intake(session, source="crm", phone="+7 913 000-00-01")
        mail_card = await customers.intake(
            session, source="crm", name="Анна", email="anna@example.ru"
        )
    people = [
        # Both keys known, on two cards: the phone's card, and the e-mail stays where it is.
        customers.Person(name="Анна Б.", phone="+79130000001", email="anna@example.ru"),
        customers.Person(name="Борис", phone="+79130000002", email="boris@example.ru"),
        customers.Person(name="Борис Б.", phone=None, email="boris@example.ru"),
        customers.Person(name="Без контактов"),
    ]
    async with database.transaction() as session:
        taken = await customers.intake_many(session, "import", people)
    first, boris, boris_again, lonely = taken.customer_ids
    assert first == phone_card.id
    assert boris == boris_again not in (phone_card.id, mail_card.id)
    assert lonely not in (first, boris)
    assert (taken.created, taken.updated) == (2, 1)
    async with database.reader() as session:
        card = await session.get(Customer, phone_card.id)
        owner = await session.scalar(
            select(Contact.customer_id).where(Contact.value == "anna@example.ru")
        )
    assert card is not None
    assert card.name == "Анна Б."
    assert owner == mail_card.id
    [updated] = await events_of(database, "customers.customer.updated")
    assert updated.payload["changed"] == ["name"]


async def test_submit_many_places_like_the_backlog_and_reports_each_item(
    database: Database, clock: Any
) -> None:
    [agent] = await lead_desk(database, agents=1, capacity=2)
    async with database.transaction() as session:
        results = await routing.submit_many(
            session,
            [routing.NewItem(reference=f"bulk:{n}", kind="lead", priority=n % 2) for n in range(4)]
            + [routing.NewItem(reference="bulk:other", kind="no-such-kind")],
        )
    states = [(r.state, r.agent_id) for r in results]
    # Priority first, then age: items 1 and 3 (priority 1) go to the agent.
    assert states == [("waiting", None), ("assigned", agent.id), ("waiting", None),
                      ("assigned", agent.id), ("waiting", None)]  # fmt: skip
    await assert_invariants(database)
    waiting = {e.payload["reference"]: e.payload["reason"]
               for e in await events_of(database, "routing.item.waiting")}  # fmt: skip
    assert waiting == {"bulk:0": "no_eligible_agent", "bulk:2": "no_eligible_agent",
                       "bulk:other": "no_queue"}  # fmt: skip
