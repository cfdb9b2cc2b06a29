"""Erasing a person (152-FZ, GDPR): their values in the trail become pseudonyms; rows stay."""

from __future__ import annotations

import re
import uuid

import pytest

from allot.contexts import audit
from allot.contexts.audit import service
from allot.kernel.context import bound

from .factories import all_entries, user_actor

PSEUDONYM = re.compile(r"^pseud:[0-9a-f]{16}$")


@pytest.fixture(autouse=True)
def pseudonym_key():
    service.set_pseudonym_key("test-pseudonym-key")


async def write_history(database):
    """Ivan is created, changes his e-mail, keeps his phone; Olga is created; Ivan edits a lead."""
    ivan, olga = uuid.uuid4(), uuid.uuid4()
    admin = user_actor("admin@example.ru")
    with bound(actor=admin):
        async with database.transaction() as session:
            await audit.record(
                session, action="identity.user.created", object_type="identity.user",
                object_id=ivan, personal_fields=("email", "name", "phone"),
                after={"email": "ivan@example.ru", "name": "Иван Петров",
                       "phone": "+79123456789", "role": "operator"},
                summary="Created Иван Петров (ivan@example.ru)",
            )  # fmt: skip
            await audit.record(
                session, action="identity.user.updated", object_type="identity.user",
                object_id=ivan, personal_fields=("email", "phone"),
                before={"email": "ivan@example.ru", "phone": "+79123456789", "role": "operator"},
                after={"email": "ivan.p@example.ru", "phone": "+79123456789", "role": "manager"},
            )  # fmt: skip
            await audit.record(
                session, action="identity.user.created", object_type="identity.user",
                object_id=olga, personal_fields=("email",),
                after={"email": "olga@example.ru", "role": "analyst"},
            )  # fmt: skip
    with bound(actor=user_actor("ivan.p@example.ru", ivan)):
        async with database.transaction() as session:
            await audit.record(
                session, action="leads.lead.updated", object_type="leads.lead", object_id="L-1",
                before={"stage": "new"}, after={"stage": "won"},
                summary="ivan.p@example.ru won the lead",
            )  # fmt: skip
    return ivan, olga


def by_action(entries, object_id, action):
    (entry,) = [e for e in entries if e.object_id == str(object_id) and e.action == action]
    return entry


async def test_personal_values_of_the_subject_become_stable_pseudonyms(database, clock):
    ivan, _ = await write_history(database)
    before = await all_entries(database)

    async with database.transaction() as session:
        changed = await audit.pseudonymise_subject(
            session, object_type="identity.user", object_id=ivan
        )

    after = await all_entries(database)
    assert changed == 3  # two entries about Ivan, one made by him
    created = by_action(after, ivan, "identity.user.created")
    updated = by_action(after, ivan, "identity.user.updated")
    for value in (created.after["email"], created.after["name"], updated.after["email"]):
        assert PSEUDONYM.match(value)
    # Stable: the same value gets the same pseudonym, so "unchanged" and "changed" still show.
    assert created.after["email"] == updated.before["email"]
    assert updated.before["email"] != updated.after["email"]
    assert updated.before["phone"] == updated.after["phone"]
    assert created.after["name"] != created.after["email"]
    # Non-personal values, the fields that changed and the shape of the trail stay whole.
    assert created.after["role"] == "operator"
    assert (updated.before["role"], updated.after["role"]) == ("operator", "manager")
    assert updated.changed_fields == ["email", "role"]
    assert [(e.id, e.action, e.object_id, e.occurred_at) for e in after] == [
        (e.id, e.action, e.object_id, e.occurred_at) for e in before
    ]
    assert created.pseudonymised_at == clock.now()
    assert created.summary == f"Created {created.after['name']} ({created.after['email']})"


async def test_the_subject_as_actor_is_pseudonymised_but_the_action_kept(database):
    ivan, _ = await write_history(database)
    async with database.transaction() as session:
        await audit.pseudonymise_subject(session, object_type="identity.user", object_id=ivan)

    lead_entry = by_action(await all_entries(database), "L-1", "leads.lead.updated")
    assert PSEUDONYM.match(lead_entry.actor_label)
    assert lead_entry.actor_id == ivan
    assert (lead_entry.before, lead_entry.after) == ({"stage": "new"}, {"stage": "won"})
    assert lead_entry.summary == f"{lead_entry.actor_label} won the lead"


async def test_other_subjects_are_untouched(database):
    ivan, olga = await write_history(database)
    async with database.transaction() as session:
        await audit.pseudonymise_subject(session, object_type="identity.user", object_id=ivan)

    entries = await all_entries(database)
    olga_created = by_action(entries, olga, "identity.user.created")
    assert olga_created.after == {"email": "olga@example.ru", "role": "analyst"}
    assert olga_created.pseudonymised_at is None
    assert {e.actor_label for e in entries if e.actor_id != ivan} == {"admin@example.ru"}
    serialized = repr([(e.before, e.after, e.summary, e.actor_label) for e in entries])
    assert "ivan" not in serialized.lower()
    assert "Иван" not in serialized


async def test_pseudonymising_again_changes_nothing(database):
    ivan, _ = await write_history(database)
    async with database.transaction() as session:
        await audit.pseudonymise_subject(session, object_type="identity.user", object_id=ivan)
    first = [(e.before, e.after, e.actor_label) for e in await all_entries(database)]

    async with database.transaction() as session:
        again = await audit.pseudonymise_subject(
            session, object_type="identity.user", object_id=str(ivan)
        )

    assert again == 0
    assert [(e.before, e.after, e.actor_label) for e in await all_entries(database)] == first


async def test_pseudonyms_depend_on_the_key(database):
    ivan, _ = await write_history(database)
    async with database.transaction() as session:
        await audit.pseudonymise_subject(session, object_type="identity.user", object_id=ivan)
    entry = by_action(await all_entries(database), ivan, "identity.user.created")

    assert entry.after["email"] == service.pseudonym(
        "identity.user", str(ivan), "email", "ivan@example.ru"
    )
    service.set_pseudonym_key("another-key")
    assert entry.after["email"] != service.pseudonym(
        "identity.user", str(ivan), "email", "ivan@example.ru"
    )


async def test_subjects_with_non_uuid_ids_and_no_entries(database):
    async with database.transaction() as session:
        await audit.record(
            session, action="customers.customer.created", object_type="customers.customer",
            object_id="ext-77", personal_fields=("phones",),
            after={"phones": ["+79123456789", "+79001112233"]},
        )  # fmt: skip
        nobody = await audit.pseudonymise_subject(
            session, object_type="customers.customer", object_id="ext-00"
        )
        changed = await audit.pseudonymise_subject(
            session, object_type="customers.customer", object_id="ext-77"
        )
    assert (nobody, changed) == (0, 1)
    (entry,) = await all_entries(database)
    assert PSEUDONYM.match(entry.after["phones"])


async def test_many_entries_are_rewritten_in_batches(database, monkeypatch):
    from allot.contexts.audit import repository

    monkeypatch.setattr(repository, "PSEUDONYMISE_BATCH", 4)
    subject = uuid.uuid4()
    seen = [
        audit.AuditEntryIn(
            action="identity.user.seen",
            object_type="identity.user",
            object_id=subject,
            after={"email": f"u{n}@example.ru"},
            personal_fields=("email",),
        )
        for n in range(10)
    ]
    async with database.transaction() as session:
        await audit.record_many(session, seen)
    async with database.transaction() as session:
        changed = await audit.pseudonymise_subject(
            session, object_type="identity.user", object_id=subject
        )
    assert changed == 10
    assert all(PSEUDONYM.match(e.after["email"]) for e in await all_entries(database))
