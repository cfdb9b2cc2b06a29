"""Intake: one card per customer, found again by phone, e-mail or external id however the
contact is written; contacts never shared by two cards; a merge is never automatic."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from allot.contexts import customers
from allot.contexts.customers.models import Contact
from allot.kernel.errors import ValidationFailed
from allot.kernel.events import OutboxEvent

from .helpers import audit_of, cards, contacts, info, intake, timeline

PHONE = "+79123456789"


async def test_a_first_intake_creates_a_card_with_normalized_contacts(database, clock):
    ref = await intake(
        database, source="site-form", name="  Иван   Петров ", phone="8 912 345-67-89",
        email="Ivan@Example.RU", external_id="F-17", consent=True,
    )  # fmt: skip
    assert ref.created
    card = await info(database, ref.id)
    assert card.name == "Иван Петров"
    assert (card.phones, card.emails) == ((PHONE,), ("ivan@example.ru",))
    assert card.external_ids == (("site-form", "F-17"),)
    assert (card.source, card.consent, card.kind, card.merged_into_id) == (
        "site-form", True, "person", None,
    )  # fmt: skip
    assert card.created_at == clock.now()
    (row,) = await cards(database)
    assert (row.consent_source, row.consent_at) == ("site-form", clock.now())
    assert {c.source for c in await contacts(database)} == {"site-form"}


async def test_creation_is_audited_with_personal_fields_published_and_on_the_timeline(database):
    ref = await intake(database, source="form", name="Иван", phone=PHONE)
    (entry,) = await audit_of(database, ref.id)
    assert entry.action == "customers.customer.created"
    assert entry.after["phones"] == [PHONE]
    assert {"name", "phones", "emails", "external_ids"} <= set(entry.personal_fields)
    async with database.reader() as session:
        (event,) = (await session.execute(select(OutboxEvent))).scalars()
    assert event.type == "customers.customer.created"
    assert event.payload["customer_id"] == str(ref.id)
    assert PHONE not in str(event.payload)
    assert "Иван" not in str(event.payload)
    (created,) = await timeline(database, ref.id)
    assert (created.kind, created.data) == ("customer.created", {"source": "form"})


async def test_the_same_phone_in_another_notation_finds_the_card_and_adds_the_new_email(database):
    first = await intake(database, phone="8 912 345-67-89")
    again = await intake(database, phone="+7 (912) 345 67 89", email="ivan@example.ru")
    assert (again.id, again.created) == (first.id, False)
    assert (await info(database, first.id)).emails == ("ivan@example.ru",)
    once_more = await intake(database, phone="9123456789")
    assert once_more.id == first.id
    assert len(await cards(database)) == 1
    added = (await audit_of(database, first.id))[-1]
    assert (added.action, added.after) == (
        "customers.customer.updated", {"added_emails": ["ivan@example.ru"]},
    )  # fmt: skip


async def test_matching_by_email_and_by_external_id_of_the_same_source(database):
    by_email = await intake(database, email="olga@example.ru")
    assert (await intake(database, email=" OLGA@example.ru", phone=PHONE)).id == by_email.id
    assert (await info(database, by_email.id)).phones == (PHONE,)

    crm = await intake(database, source="bitrix24", external_id="C-1")
    assert (await intake(database, source="bitrix24", external_id="C-1")).id == crm.id
    other_source = await intake(database, source="amocrm", external_id="C-1")
    assert other_source.created
    assert other_source.id != crm.id


async def test_a_contact_of_another_card_stays_off_and_nothing_is_merged(database):
    by_phone = await intake(database, phone=PHONE)
    by_email = await intake(database, email="ivan@example.ru")
    both = await intake(database, phone=PHONE, email="ivan@example.ru")
    assert both.id == by_phone.id
    assert not both.created
    assert (await info(database, by_phone.id)).emails == ()
    assert (await info(database, by_email.id)).emails == ("ivan@example.ru",)
    assert all(c.merged_into_id is None for c in await cards(database))


async def test_the_external_id_is_matched_before_the_phone_and_the_phone_before_the_email(
    database,
):
    by_email = await intake(database, email="ivan@example.ru")
    by_phone = await intake(database, phone=PHONE)
    by_external = await intake(database, source="crm", external_id="X")
    assert (await intake(database, phone=PHONE, email="ivan@example.ru")).id == by_phone.id
    everything = await intake(
        database, source="crm", external_id="X", phone=PHONE, email="ivan@example.ru"
    )
    assert everything.id == by_external.id
    assert by_email.id != by_phone.id


async def test_a_name_is_filled_in_but_never_overwritten_and_consent_follows_the_latest_answer(
    database, clock
):
    ref = await intake(database, phone=PHONE)
    await intake(database, phone=PHONE, name="Иван")
    await intake(database, phone=PHONE, name="Ваня")
    assert (await info(database, ref.id)).name == "Иван"
    clock.advance(60)
    await intake(database, phone=PHONE, consent=True, source="call")
    await intake(database, phone=PHONE)  # no answer given: the recorded one stands
    (card,) = await cards(database)
    assert (card.consent, card.consent_source, card.consent_at) == (True, "call", clock.now())
    await intake(database, phone=PHONE, consent=False, source="sms")
    assert (await info(database, ref.id)).consent is False
    kinds = [e.kind for e in await timeline(database, ref.id)]
    assert kinds == ["customer.created", "customer.consent", "customer.consent"]


async def test_a_merged_card_resolves_to_the_card_it_was_merged_into(database):
    survivor = await intake(database, phone=PHONE)
    duplicate = await intake(database, email="ivan@example.ru")
    await database.run(lambda s: customers.merge(s, survivor.id, duplicate.id))
    assert (await intake(database, email="ivan@example.ru")).id == survivor.id
    # A contact left on the merged card (an intake racing the merge) still leads to the survivor.
    async with database.transaction() as session:
        session.add(Contact(customer_id=duplicate.id, kind="phone", value="+79990001122",
                            source="form"))  # fmt: skip
    assert (await intake(database, phone="+7 999 000-11-22")).id == survivor.id


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"phone": "12345"}, "body.customer.phone"),
        ({"email": "ivan@"}, "body.customer.email"),
        ({"phone": PHONE, "kind": "robot"}, "body.customer.kind"),
        ({"phone": PHONE, "source": "  "}, "body.customer.source"),
        ({"external_id": "x" * 300}, "body.customer.external_id"),
        ({}, "body.customer.phone"),
        ({"phone": " ", "email": ""}, "body.customer.phone"),
    ],
)
async def test_invalid_input_names_the_field_and_writes_nothing(database, fields, field):
    with pytest.raises(ValidationFailed) as failure:
        await intake(database, **{"source": "form", **fields})
    assert failure.value.errors[0].field == field
    assert await cards(database) == []


async def test_the_field_prefix_is_the_callers(database):
    with pytest.raises(ValidationFailed) as failure:
        await intake(database, phone="0", field_prefix="body.contact")
    assert failure.value.errors[0].field == "body.contact.phone"


async def test_a_name_alone_makes_a_card_every_time(database):
    first = await intake(database, name="Аноним", phone="", email=None)
    second = await intake(database, name="Аноним")
    assert first.created
    assert second.created
    assert first.id != second.id
