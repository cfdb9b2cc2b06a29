"""The timeline: entries written directly and from the leads context's events, shown in the
reader's language, each event counted once, a merged customer's events on the survivor."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from allot.contexts import customers
from allot.contexts.customers import handlers
from allot.contexts.customers.timeline import entry_title
from allot.kernel.errors import NotFound
from allot.kernel.events import (
    ConsumerRegistry,
    Dispatcher,
    Event,
    OutboxEvent,
    publish,
    registry,
)
from allot.kernel.i18n import using_locale

from .helpers import intake, timeline

CONSUMER = "customers.timeline_from_leads"


def only_the_timeline_consumer() -> ConsumerRegistry:
    """The customers consumer alone: these tests fake the leads context's events, which the
    real leads handlers must not see."""
    (real,) = [c for c in registry.all() if c.name == CONSUMER]
    consumers = ConsumerRegistry()
    consumers.subscribe(
        real.name, *real.event_types, durable=real.durable, prepare=real.prepare, takes=real.takes
    )(real.handler)
    assert real.handler is handlers.lead_event_to_timeline
    return consumers


async def lead_event(database, type_, customer_id, lead_id, **facts):
    payload = {"lead_id": str(lead_id), "customer_id": str(customer_id), **facts}
    async with database.transaction() as session:
        await publish(session, type=type_, aggregate_type="leads.lead", aggregate_id=lead_id,
                      payload=payload)  # fmt: skip


async def deliver(database) -> int:
    return await Dispatcher(database, only_the_timeline_consumer()).drain()


def test_the_consumer_listens_to_the_four_lead_events():
    (consumer,) = [c for c in registry.all() if c.name == CONSUMER]
    assert consumer.event_types == {
        "leads.lead.created", "leads.lead.status_changed", "leads.lead.assigned",
        "leads.note.added",
    }  # fmt: skip


async def test_lead_events_become_entries_with_the_facts_and_the_time_they_happened(
    database, clock
):
    ref = await intake(database, phone="+79123456789")
    lead_id, agent_id = uuid.uuid4(), uuid.uuid4()
    clock.advance(60)
    facts = {"status": "new", "assignee_id": None, "amount_minor": 150000, "currency": "RUB"}
    await lead_event(database, "leads.lead.created", ref.id, lead_id, source="site", **facts)
    created_at = clock.now()
    clock.advance(60)
    await lead_event(database, "leads.lead.assigned", ref.id, lead_id, agent_id=str(agent_id))
    await lead_event(database, "leads.lead.status_changed", ref.id, lead_id,
                     from_status="new", to_status="won")  # fmt: skip
    await lead_event(database, "leads.note.added", ref.id, lead_id, note_id="n1",
                     excerpt="Перезвонить после обеда")  # fmt: skip
    clock.advance(3600)  # delivered later: the entries keep the time the events happened
    assert await deliver(database) == 5  # + customers.customer.created, which it ignores

    entries = await timeline(database, ref.id)
    assert [e.kind for e in entries] == [
        "customer.created", "lead.created", "lead.assigned", "lead.status_changed",
        "lead.note_added",
    ]  # fmt: skip
    lead_entries = entries[1:]
    assert {e.reference for e in lead_entries} == {f"lead:{lead_id}"}
    assert lead_entries[0].occurred_at == created_at
    assert lead_entries[0].data["amount_minor"] == 150000
    assert lead_entries[1].data["agent_id"] == str(agent_id)
    with using_locale("en"):
        titles = [entry_title(e.title, e.data) for e in lead_entries]
    assert titles == [
        "New lead from site", "Lead assigned to an agent", "Lead status changed: new → won",
        "Note on a lead: Перезвонить после обеда",
    ]  # fmt: skip
    with using_locale("ru"):
        russian = [entry_title(e.title, e.data) for e in lead_entries]
    assert russian[0] == "Новый лид из источника site"
    assert russian[2] == "Статус лида изменён: new → won"


async def test_a_lead_assigned_as_it_was_taken_in_makes_one_entry_that_says_both(database):
    ref = await intake(database, phone="+79123456789")
    lead_id, agent_id = uuid.uuid4(), str(uuid.uuid4())
    await lead_event(database, "leads.lead.created", ref.id, lead_id, source="site",
                     status="new", assignee_id=agent_id)  # fmt: skip
    await lead_event(database, "leads.lead.assigned", ref.id, lead_id, agent_id=agent_id,
                     previous_agent_id=None, at_intake=True)  # fmt: skip
    assert await deliver(database) == 3
    (created,) = [e for e in await timeline(database, ref.id) if e.kind.startswith("lead.")]
    assert created.kind == "lead.created"
    assert created.data["assignee_id"] == agent_id
    with using_locale("en"):
        assert entry_title(created.title, created.data) == (
            "New lead from site, assigned to an agent"
        )
    with using_locale("ru"):
        assert entry_title(created.title, created.data) == (
            "Новый лид из источника site, назначен агенту"
        )
    # A later assignment (no `at_intake`) is an entry of its own.
    await lead_event(database, "leads.lead.assigned", ref.id, lead_id, agent_id=agent_id,
                     previous_agent_id=None)  # fmt: skip
    await deliver(database)
    kinds = [e.kind for e in await timeline(database, ref.id)]
    assert kinds.count("lead.assigned") == 1


async def test_an_event_delivered_twice_makes_one_entry(database):
    ref = await intake(database, phone="+79123456789")
    await lead_event(database, "leads.lead.assigned", ref.id, uuid.uuid4(), agent_id="a")
    await deliver(database)
    dispatcher = Dispatcher(database, only_the_timeline_consumer())
    async with database.reader() as session:
        row = (
            await session.execute(
                select(OutboxEvent).where(OutboxEvent.type == "leads.lead.assigned")
            )
        ).scalar_one()
    (consumer,) = dispatcher.consumers.all()
    assert await dispatcher.apply(consumer, Event.from_row(row)) is False
    assert [e.kind for e in await timeline(database, ref.id)].count("lead.assigned") == 1


async def test_events_of_a_merged_customer_land_on_the_survivor_and_unknown_ones_are_skipped(
    database,
):
    survivor = await intake(database, phone="+79123456789")
    duplicate = await intake(database, email="ivan@example.ru")
    await database.run(lambda s: customers.merge(s, survivor.id, duplicate.id))
    await lead_event(database, "leads.lead.created", duplicate.id, uuid.uuid4(), source="call",
                     status="new", assignee_id=None)  # fmt: skip
    await lead_event(database, "leads.lead.created", uuid.uuid4(), uuid.uuid4(), source="call",
                     status="new", assignee_id=None)  # fmt: skip
    await deliver(database)
    kinds = [e.kind for e in await timeline(database, survivor.id)]
    assert "lead.created" in kinds
    assert await timeline(database, duplicate.id) == []


async def test_direct_entries_are_ordered_by_when_they_happened(database, clock):
    ref = await intake(database, phone="+79123456789")
    earlier = clock.now() - timedelta(days=1)
    async with database.transaction() as session:
        await customers.add_timeline_entry(
            session, ref.id, kind="order.placed", title="Order %(number)s placed",
            reference="order:42", data={"number": "42"}, occurred_at=earlier,
        )  # fmt: skip
    entries = await timeline(database, ref.id)
    assert [e.kind for e in entries] == ["order.placed", "customer.created"]
    assert entry_title(entries[0].title, entries[0].data) == "Order 42 placed"
    assert entry_title("Order %(number)s placed", {}) == "Order %(number)s placed"


async def test_an_entry_for_an_unknown_customer_is_refused(database):
    with pytest.raises(NotFound):
        async with database.transaction() as session:
            await customers.add_timeline_entry(session, uuid.uuid4(), kind="x", title="Hello")


async def test_a_batch_of_events_reads_its_cards_once(database):
    from tests.conftest import count_queries

    cards = [await intake(database, phone=f"+7912345670{n}") for n in range(6)]
    await deliver(database)  # the cards' own events
    for card in cards:
        await lead_event(database, "leads.lead.assigned", card.id, uuid.uuid4(), agent_id="a")
    with count_queries(database) as queries:
        assert await deliver(database) == 6
    card_reads = [s for s in queries.statements if "FROM customers_customers" in s]
    assert len(card_reads) == 1  # not one per event
    for card in cards:
        assert [e.kind for e in await timeline(database, card.id)].count("lead.assigned") == 1
