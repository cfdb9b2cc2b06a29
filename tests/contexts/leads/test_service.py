"""Lead rules through the service: intake, SLA, the pipeline, first response, closing leads and
what that does to routing, dedup, and following customers' merges and erasures."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from allot.contexts import customers, leads
from allot.contexts.leads import events, handlers, pipeline, service
from allot.contexts.leads.access import Viewer
from allot.contexts.leads.pipeline import Pipeline, StatusDef
from allot.kernel.errors import Conflict, ValidationFailed
from allot.kernel.events import Dispatcher, Event, InboxEntry
from allot.kernel.timers import TimerRunner
from tests.contexts.routing.helpers import agent as stored_agent
from tests.contexts.routing.helpers import make_agent, set_status

from .helpers import (
    activities,
    audit_of,
    events_of,
    item_of,
    lead_desk,
    move,
    new_lead,
    note,
    stored,
)


async def test_intake_routes_the_lead_and_records_it(database, clock):
    [anna] = await lead_desk(database)
    lead = await new_lead(database, amount_minor=15_000_000, term_months=12, priority=5)
    assert lead.status == "new"
    assert lead.assignee_id == anna.id
    assert lead.first_response_due_at == clock.now() + timedelta(seconds=900)
    saved = await stored(database, lead.id)
    assert (saved.assignee_id, saved.amount_minor, saved.currency) == (anna.id, 15_000_000, "RUB")
    item = await item_of(database, lead.id)
    assert (item.state, item.owner_agent_id, item.priority) == ("assigned", anna.id, 5)
    assert item.first_response_due_at == lead.first_response_due_at
    assert [a.kind for a in await activities(database, lead.id)] == ["created", "assigned"]
    [created] = await events_of(database, events.LEAD_CREATED)
    assert created.payload["lead_id"] == str(lead.id)
    assert created.payload["customer_id"] == str(lead.customer_id)
    assert created.payload["assignee_id"] == str(anna.id)
    assert (created.payload["amount_minor"], created.payload["currency"]) == (15_000_000, "RUB")
    [assigned] = await events_of(database, events.LEAD_ASSIGNED)
    assert assigned.payload["agent_id"] == str(anna.id)
    [entry] = await audit_of(database, lead.id)
    assert entry.action == "leads.lead.created"
    assert entry.after["assignee_id"] == str(anna.id)


async def test_a_lead_with_no_free_agent_waits(database, clock):
    await lead_desk(database, agents=1, capacity=1)
    await new_lead(database)
    waiting = await new_lead(database)
    assert waiting.assignee_id is None
    assert (await item_of(database, waiting.id)).state == "waiting"
    assert [a.kind for a in await activities(database, waiting.id)] == ["created"]


async def test_the_first_response_time_comes_from_the_source(database, clock):
    async with database.transaction() as session:
        await pipeline.set_first_response_time(session, "partner", 300)
        await pipeline.set_first_response_time(session, "*", 1800)
    partner = await new_lead(database, source="partner")
    other = await new_lead(database, source="website")
    assert partner.first_response_due_at == clock.now() + timedelta(seconds=300)
    assert other.first_response_due_at == clock.now() + timedelta(seconds=1800)


async def test_the_pipeline_allows_only_its_transitions(database, clock):
    await lead_desk(database)
    lead = await new_lead(database)
    with pytest.raises(service.InvalidTransition) as invalid:
        await move(database, lead.id, "won")
    assert invalid.value.status == 409
    assert invalid.value.type_uri == "urn:allot:problem:invalid-transition"
    with pytest.raises(ValidationFailed) as unknown:
        await move(database, lead.id, "archived")
    assert unknown.value.errors[0].field == "body.status"
    assert (await stored(database, lead.id)).status == "new"
    for status in ("in_progress", "qualified", "won"):
        await move(database, lead.id, status)
    with pytest.raises(service.InvalidTransition):
        await move(database, lead.id, "lost")  # terminal: no way out
    changes = [(a.from_status, a.to_status) for a in await activities(database, lead.id)
               if a.kind == "status_changed"]  # fmt: skip
    assert changes == [("new", "in_progress"), ("in_progress", "qualified"), ("qualified", "won")]
    assert len(await events_of(database, events.LEAD_STATUS_CHANGED)) == 3


async def test_the_first_status_change_is_the_first_response(database, clock):
    await lead_desk(database)
    lead = await new_lead(database)
    clock.advance(60)
    await move(database, lead.id, "in_progress")
    responded = clock.now()
    clock.advance(60)
    await move(database, lead.id, "qualified")
    saved = await stored(database, lead.id)
    assert saved.first_responded_at == responded
    assert saved.sla_state(clock.now()) == "met"
    assert (await item_of(database, lead.id)).first_response_at == responded


async def test_a_note_by_the_assignee_is_the_first_response_and_others_notes_are_not(
    database, clock
):
    [anna, boris] = await lead_desk(database, agents=2, capacity=1)
    lead = await new_lead(database)
    other = boris.id if lead.assignee_id == anna.id else anna.id
    await note(database, lead.id, "Checked the documents", Viewer(True, agent_id=other))
    assert (await stored(database, lead.id)).first_responded_at is None
    clock.advance(1200)  # past the 15 minutes
    await note(database, lead.id, "Called, no answer", Viewer(False, agent_id=lead.assignee_id))
    saved = await stored(database, lead.id)
    assert saved.first_responded_at == clock.now()
    assert saved.sla_state(clock.now()) == "breached"
    [_, added] = await events_of(database, events.NOTE_ADDED)
    assert added.payload["excerpt"] == "Called, no answer"
    assert added.payload["note_id"]
    assert added.payload["customer_id"] == str(lead.customer_id)


async def test_note_excerpts_are_short(database, clock):
    await lead_desk(database)
    lead = await new_lead(database)
    await note(database, lead.id, "слово " * 100)
    [added] = await events_of(database, events.NOTE_ADDED)
    assert len(added.payload["excerpt"]) == 100


async def test_winning_frees_the_agent_and_hands_over_the_backlog_in_one_transaction(
    database, clock
):
    [anna] = await lead_desk(database, agents=1, capacity=1)
    first = await new_lead(database)
    second = await new_lead(database)
    assert (first.assignee_id, second.assignee_id) == (anna.id, None)
    await move(database, first.id, "in_progress")
    await move(database, first.id, "qualified")
    await move(database, first.id, "won")
    # Committed together with the status change, before any event was dispatched:
    assert (await item_of(database, first.id)).state == "completed"
    handed = await item_of(database, second.id)
    assert (handed.state, handed.owner_agent_id) == ("assigned", anna.id)
    assert (await stored_agent(database, anna.id)).load == 1
    await Dispatcher(database).drain()
    assert (await stored(database, second.id)).assignee_id == anna.id
    assert (await stored(database, first.id)).closed_at == clock.now()


@pytest.mark.parametrize(
    ("reason", "item_state"), [("spam", "cancelled"), ("unreachable", "completed")]
)
async def test_losing_cancels_spam_and_completes_the_rest(database, clock, reason, item_state):
    [anna] = await lead_desk(database)
    lead = await new_lead(database)
    await move(database, lead.id, "lost", lost_reason=reason)
    saved = await stored(database, lead.id)
    assert (saved.status, saved.lost_reason) == ("lost", reason)
    assert (await item_of(database, lead.id)).state == item_state
    assert (await stored_agent(database, anna.id)).load == 0


async def test_a_lost_reason_only_goes_with_a_loss(database, clock):
    await lead_desk(database)
    lead = await new_lead(database)
    with pytest.raises(ValidationFailed) as failed:
        await move(database, lead.id, "in_progress", lost_reason="spam")
    assert failed.value.errors[0].field == "body.lost_reason"


async def test_a_second_lead_with_the_same_external_id_is_a_conflict_naming_the_first(
    database, clock
):
    await lead_desk(database)
    first = await new_lead(database, source="partner", external_id="A-1")
    with pytest.raises(Conflict) as conflict:
        await new_lead(database, source="partner", external_id=" A-1 ")
    assert conflict.value.extra == {"existing_id": str(first.id)}
    other_source = await new_lead(database, source="website", external_id="A-1")
    assert other_source.id != first.id
    assert len(await events_of(database, events.LEAD_CREATED)) == 2


async def test_validation_names_every_bad_field_for_bulk_callers():
    bad = leads.NewLead(
        source="Web Site!",
        customer_name=" ",
        customer_phone="12",
        priority=1000,
        amount_minor=-5,
        currency="rub1",
        term_months=0,
        attributes={"": 1},
    )
    with pytest.raises(ValidationFailed) as failed:
        leads.validate_new_lead(bad, prefix="rows.7")
    fields = {e.field for e in failed.value.errors}
    assert fields == {
        "rows.7.source", "rows.7.customer.name", "rows.7.customer.phone", "rows.7.priority",
        "rows.7.product.amount_minor", "rows.7.product.currency", "rows.7.product.term_months",
        "rows.7.attributes",
    }  # fmt: skip
    good = leads.validate_new_lead(
        leads.NewLead(source=" Partner ", customer_name="Олег", customer_phone="8 912 345-67-89")
    )
    assert (good.source, good.customer_phone) == ("partner", "+79123456789")


async def test_a_routing_assignment_is_applied_once_however_often_it_arrives(database, clock):
    await lead_desk(database, agents=1, capacity=1)
    await new_lead(database)
    waiting = await new_lead(database)
    assert waiting.assignee_id is None
    dispatcher = Dispatcher(database)
    await dispatcher.drain()  # the intake's own assignment is on the lead already: no change
    assert len(await events_of(database, events.LEAD_ASSIGNED)) == 1
    # Routing said so (made by the submit, in its result) and the consumer was not even handed
    # it: no unit of work, no inbox row.
    [at_intake] = await events_of(database, "routing.item.assigned")
    assert at_intake.payload["at_submit"] is True
    assert await inbox_of(database, "leads.on_routing_assignment") == []
    clock.advance(10)
    carl = await make_agent(database, capacity=1, status="offline")
    await set_status(database, carl.id, "available")  # takes the waiting lead at once
    [assignment] = [e for e in await events_of(database, "routing.item.assigned")
                    if e.payload["reference"] == f"lead:{waiting.id}"]  # fmt: skip
    assert assignment.payload["at_submit"] is False  # made by the backlog, not the submit
    event = Event.from_row(assignment)
    for _ in range(2):
        async with database.transaction() as session:
            await handlers.on_routing_assignment(session, event)
    assert (await stored(database, waiting.id)).assignee_id == carl.id
    assert [a.kind for a in await activities(database, waiting.id)] == ["created", "assigned"]
    published = [e for e in await events_of(database, events.LEAD_ASSIGNED)
                 if e.payload["lead_id"] == str(waiting.id)]  # fmt: skip
    assert [e.payload["agent_id"] for e in published] == [str(carl.id)]
    trail = await audit_of(database, waiting.id)
    assert [e.action for e in trail] == ["leads.lead.created", "leads.lead.assigned"]
    assert (trail[1].before["assignee_id"], trail[1].after["assignee_id"]) == (None, str(carl.id))
    await dispatcher.drain()  # the real delivery of the same event changes nothing more
    assert [a.kind for a in await activities(database, waiting.id)] == ["created", "assigned"]
    assert await inbox_of(database, "leads.on_routing_assignment") == [assignment.id]


async def inbox_of(database, consumer):
    async with database.reader() as session:
        found = await session.scalars(
            select(InboxEntry.message_id).where(InboxEntry.consumer == consumer)
        )
        return list(found)


async def test_a_reclaimed_lead_follows_routing_and_ignores_stale_events(database, clock):
    [anna, boris] = await lead_desk(database, agents=2, capacity=1)
    lead = await new_lead(database)
    first_owner = lead.assignee_id
    clock.advance(901)  # no first response within the SLA: routing hands it to the other agent
    assert await TimerRunner(database).fire_due() >= 1
    dispatcher = Dispatcher(database)
    await dispatcher.drain()
    saved = await stored(database, lead.id)
    second_owner = ({anna.id, boris.id} - {first_owner}).pop()
    item = await item_of(database, lead.id)
    assert saved.assignee_id == item.owner_agent_id
    assert saved.assignee_id == second_owner
    kinds = [(a.kind, a.agent_id, a.reason) for a in await activities(database, lead.id)]
    assert kinds == [
        ("created", None, None),
        ("assigned", first_owner, "direct"),
        ("unassigned", first_owner, "first_response_sla"),
        ("assigned", second_owner, "direct"),
    ]
    # A stale copy of the very first assignment must not undo what happened since.
    changed = await service_follow(database, lead.id, first_owner, clock.now() - timedelta(1))
    assert changed is False
    assert (await stored(database, lead.id)).assignee_id == saved.assignee_id


async def service_follow(database, lead_id, agent_id, at):
    async with database.transaction() as session:
        return await service.follow_routing(
            session, lead_id, agent_id=agent_id, assigned=True, at=at, reason="direct"
        )


async def test_leads_follow_a_customer_merge(database, clock):
    await lead_desk(database, capacity=5)
    kept = await new_lead(database, customer_phone="+7 912 111-11-11")
    moved = await new_lead(database, customer_phone="+7 912 222-22-22")
    async with database.transaction() as session:
        await customers.merge(session, kept.customer_id, moved.customer_id)
    await Dispatcher(database).drain()
    assert (await stored(database, moved.id)).customer_id == kept.customer_id
    updated = [e for e in await events_of(database, events.LEAD_UPDATED)
               if e.payload["lead_id"] == str(moved.id)]  # fmt: skip
    assert updated[0].payload["customer_id"] == str(kept.customer_id)
    assert updated[0].payload["previous_customer_id"] == str(moved.customer_id)


async def test_erasing_a_customer_drops_the_leads_search_copy(database, clock):
    await lead_desk(database)
    lead = await new_lead(database, customer_name="Пётр Забытый")
    assert "пётр забытый" in (await stored(database, lead.id)).search_text
    async with database.transaction() as session:
        await customers.erase_customer(session, lead.customer_id)
    await Dispatcher(database).drain()
    assert (await stored(database, lead.id)).search_text == ""


# -- the pipeline definition ------------------------------------------------------------------
def short_pipeline(**changes) -> Pipeline:
    statuses = changes.pop("statuses", (
        StatusDef("new", "Новый", "New", 1, initial=True),
        StatusDef("won", "Успех", "Won", 2, terminal=True, won=True),
        StatusDef("lost", "Отказ", "Lost", 3, terminal=True),
    ))  # fmt: skip
    transitions = changes.pop("transitions", (("new", "won"), ("new", "lost")))
    return Pipeline(tuple(statuses), tuple(transitions))


@pytest.mark.parametrize(
    ("definition", "field"),
    [
        (short_pipeline(transitions=(("new", "won"), ("new", "lost"), ("won", "new"))),
         "body.transitions.2.from"),
        (short_pipeline(transitions=(("new", "won"),)), "body.statuses.2.key"),
        (short_pipeline(transitions=(("new", "won"), ("new", "gone"))), "body.transitions.1.to"),
        (short_pipeline(statuses=(StatusDef("new", "Н", "N", initial=True),
                                  StatusDef("new", "Н", "N"))), "body.statuses.1.key"),
        (short_pipeline(statuses=(StatusDef("new", "Н", "N"),
                                  StatusDef("won", "У", "W", terminal=True, won=True)),
                        transitions=(("new", "won"),)), "body.statuses"),
        (short_pipeline(statuses=(StatusDef("new", "Н", "N", initial=True),
                                  StatusDef("won", "У", "W", won=True)),
                        transitions=(("new", "won"),)), "body.statuses.1.won"),
    ],
)  # fmt: skip
def test_a_pipeline_is_checked_before_it_is_stored(definition, field):
    with pytest.raises(ValidationFailed) as failed:
        pipeline.validate(definition)
    assert field in {e.field for e in failed.value.errors}


def test_the_default_pipeline_is_valid():
    pipeline.validate(pipeline.DEFAULT_PIPELINE)


async def test_replacing_the_pipeline_keeps_statuses_in_use_and_changes_the_rules(database, clock):
    await lead_desk(database)
    lead = await new_lead(database)
    await move(database, lead.id, "in_progress")
    async with database.transaction() as session:
        with pytest.raises(Conflict) as conflict:
            await pipeline.replace_pipeline(session, short_pipeline())
    assert conflict.value.extra["statuses_in_use"] == ["in_progress"]
    keeps_in_progress = short_pipeline(
        statuses=(*short_pipeline().statuses, StatusDef("in_progress", "В работе", "Working", 5)),
        transitions=(("new", "in_progress"), ("in_progress", "won"), ("in_progress", "lost")),
    )
    async with database.transaction() as session:
        await pipeline.replace_pipeline(session, keeps_in_progress)
    await move(database, lead.id, "won")  # in_progress -> won is allowed now
    async with database.reader() as session:
        current = await pipeline.get_pipeline(session)
    assert [s.key for s in current.statuses] == ["new", "won", "lost", "in_progress"]
    assert current.status("in_progress").label_en == "Working"
    [entry] = [
        e for e in await audit_of(database, "default") if e.action == "leads.pipeline.replaced"
    ]
    assert "in_progress" in str(entry.after)


async def test_the_default_pipeline_is_seeded_once_by_the_first_intake(database, clock):
    await lead_desk(database, capacity=5)
    async with database.reader() as session:
        assert await pipeline.get_pipeline(session) == pipeline.DEFAULT_PIPELINE  # not stored yet
    await new_lead(database)
    await new_lead(database)
    async with database.reader() as session:
        assert await pipeline.get_pipeline(session) == pipeline.DEFAULT_PIPELINE
