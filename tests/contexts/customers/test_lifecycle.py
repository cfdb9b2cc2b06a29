"""Merging two cards of one customer, and erasing a customer's personal data."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import select

from allot.contexts import customers
from allot.contexts.customers.models import ERASED_PREFIX
from allot.kernel.errors import Conflict, NotFound, ValidationFailed
from allot.kernel.events import OutboxEvent

from .helpers import audit_of, cards, contacts, external_ids, info, intake, timeline

PHONE = "+79123456789"


async def merge(database, into_id, from_id):
    return await database.run(lambda s: customers.merge(s, into_id, from_id))


async def erase(database, customer_id):
    await database.run(lambda s: customers.erase_customer(s, customer_id))


async def events_of(database, type_):
    async with database.reader() as session:
        rows = await session.execute(select(OutboxEvent).where(OutboxEvent.type == type_))
        return [row.payload for row in rows.scalars()]


async def test_merge_moves_contacts_ids_and_timeline_and_leaves_a_pointer(database, clock):
    survivor = await intake(database, phone=PHONE, consent=None)
    clock.advance(60)
    duplicate = await intake(database, source="crm", name="Иван", email="ivan@example.ru",
                             external_id="C-1", consent=True)  # fmt: skip
    await database.run(
        lambda s: customers.add_timeline_entry(s, duplicate.id, kind="note", title="Called back")
    )
    merged = await merge(database, survivor.id, duplicate.id)

    assert merged.id == survivor.id
    assert (merged.phones, merged.emails) == ((PHONE,), ("ivan@example.ru",))
    assert merged.external_ids == (("crm", "C-1"),)
    assert (merged.name, merged.consent) == ("Иван", True)  # missing facts taken over
    gone = await info(database, duplicate.id)
    assert gone.merged_into_id == survivor.id
    assert (gone.phones, gone.emails, gone.external_ids) == ((), (), ())
    kinds = [e.kind for e in await timeline(database, survivor.id)]
    assert kinds.count("customer.created") == 2
    assert "note" in kinds
    assert kinds[-1] == "customer.merged"
    assert await timeline(database, duplicate.id) == []
    (payload,) = await events_of(database, "customers.customer.merged")
    assert (payload["into_id"], payload["from_id"]) == (str(survivor.id), str(duplicate.id))


async def test_merge_is_audited_on_both_cards_with_personal_fields(database):
    survivor = await intake(database, phone=PHONE)
    duplicate = await intake(database, email="ivan@example.ru")
    await merge(database, survivor.id, duplicate.id)
    into_entry = (await audit_of(database, survivor.id))[-1]
    from_entry = (await audit_of(database, duplicate.id))[-1]
    assert into_entry.action == "customers.customer.merged"
    assert into_entry.before["emails"] == []
    assert into_entry.after["emails"] == ["ivan@example.ru"]
    assert into_entry.after["merged_from_id"] == str(duplicate.id)
    assert "emails" in into_entry.personal_fields
    assert from_entry.action == "customers.customer.merged_away"
    assert from_entry.after == {"merged_into_id": str(survivor.id)}


async def test_a_card_merged_earlier_into_the_merged_one_points_at_the_survivor(database):
    a, b, c = [await intake(database, phone=f"+7912345670{n}") for n in range(3)]
    await merge(database, b.id, c.id)
    await merge(database, a.id, b.id)
    assert (await info(database, c.id)).merged_into_id == a.id
    assert len((await info(database, a.id)).phones) == 3
    await database.run(lambda s: customers.add_timeline_entry(s, c.id, kind="x", title="Hello"))
    assert (await timeline(database, a.id))[-1].title == "Hello"


async def test_impossible_merges_are_refused_before_anything_changes(database):
    a = await intake(database, phone=PHONE)
    b = await intake(database, email="ivan@example.ru")
    with pytest.raises(ValidationFailed) as same:
        await merge(database, a.id, a.id)
    assert same.value.errors[0].field == "body.from_id"
    with pytest.raises(ValidationFailed) as unknown:
        await merge(database, a.id, uuid.UUID(int=1))
    assert unknown.value.errors[0].code == "not_found"
    with pytest.raises(NotFound):
        await merge(database, uuid.UUID(int=2), a.id)
    await merge(database, a.id, b.id)
    with pytest.raises(Conflict):
        await merge(database, a.id, b.id)  # merged already
    with pytest.raises(Conflict):
        await merge(database, b.id, a.id)  # into a merged card
    assert len(await audit_of(database, b.id)) == 2  # created, merged away: nothing more


async def test_crossing_merges_at_once_leave_one_survivor(database):
    a = await intake(database, phone=PHONE)
    b = await intake(database, email="ivan@example.ru")
    results = await asyncio.gather(
        merge(database, a.id, b.id), merge(database, b.id, a.id), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "CustomerInfo"]
    live = [card for card in await cards(database) if card.merged_into_id is None]
    assert len(live) == 1
    assert {c.customer_id for c in await contacts(database)} == {live[0].id}


async def test_erasure_pseudonymises_the_card_its_contacts_and_the_audit_trail(database, clock):
    survivor = await intake(database, name="Иван Петров", phone=PHONE, consent=True,
                            source="crm", external_id="C-1")  # fmt: skip
    duplicate = await intake(database, name="Ваня", email="ivan@example.ru")
    await merge(database, survivor.id, duplicate.id)
    await database.run(
        lambda s: customers.add_timeline_entry(
            s, survivor.id, kind="lead.note_added", title="Note on a lead: %(excerpt)s",
            data={"excerpt": "Иван просил перезвонить", "note_id": "n-1"},
        )
    )  # fmt: skip
    clock.advance(60)
    await erase(database, survivor.id)

    after = await info(database, survivor.id)
    assert (after.name, after.phones, after.emails) == (None, (), ())
    assert after.external_ids == ()
    assert after.consent is True
    assert after.source == "crm"
    assert {c.id for c in await cards(database)} == {survivor.id, duplicate.id}  # ids stay
    assert all(c.value.startswith(ERASED_PREFIX) for c in await contacts(database))
    assert all(e.external_id.startswith(ERASED_PREFIX) for e in await external_ids(database))
    assert all(card.erased_at == clock.now() for card in await cards(database))
    entries = await timeline(database, survivor.id)
    assert entries[-1].kind == "customer.erased"
    (note,) = [e for e in entries if e.kind == "lead.note_added"]
    assert note.data == {"excerpt": "[erased]", "note_id": "n-1"}

    trail = await audit_of(database, survivor.id) + await audit_of(database, duplicate.id)
    text = str([(e.before, e.after, e.summary) for e in trail])
    for personal in ("Иван", "Ваня", PHONE, "ivan@example.ru", "C-1"):
        assert personal not in text
    assert [e.action for e in trail].count("customers.customer.erased") == 1
    assert await events_of(database, "customers.customer.erased") != []


async def test_erasure_is_idempotent_and_frees_the_contacts_for_a_new_card(database):
    old = await intake(database, phone=PHONE)
    await erase(database, old.id)
    await erase(database, old.id)
    assert len(await audit_of(database, old.id)) == 2  # created, erased
    new = await intake(database, phone=PHONE)
    assert new.created
    assert new.id != old.id
    with pytest.raises(Conflict):
        await database.run(lambda s: customers.merge(s, new.id, old.id))


async def test_erasing_a_merged_card_points_at_the_card_to_erase(database):
    a = await intake(database, phone=PHONE)
    b = await intake(database, email="ivan@example.ru")
    await merge(database, a.id, b.id)
    with pytest.raises(Conflict) as failure:
        await erase(database, b.id)
    assert failure.value.extra == {"merged_into_id": str(a.id)}
