"""Intake under concurrency and random histories: every normalized contact belongs to exactly
one card, and every intake gets the card holding its contact, with no error for anyone.

The random histories are compared with a model of the rules run one intake at a time; the
concurrent bursts (separate transactions, PostgreSQL really in parallel) must end as some
one-at-a-time order would have.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from allot.contexts import customers
from allot.contexts.customers.models import Contact, Customer, ExternalId, TimelineEntry
from allot.kernel.events import OutboxEvent

from .helpers import cards, contacts, external_ids, intake

# Each number in three notations: dedup must see through them.
NOTATIONS = ("8 912 345-67-8{n}", "+7 (912) 345 67 8{n}", "912345678{n}")


def phone_text(number: int, notation: int) -> str:
    return NOTATIONS[notation].format(n=number)


def normalized_phone(number: int) -> str:
    return f"+7912345678{number}"


one_intake = st.fixed_dictionaries(
    {
        "phone": st.one_of(st.none(), st.tuples(st.integers(0, 3), st.integers(0, 2))),
        "email": st.one_of(st.none(), st.integers(0, 3)),
        "external": st.one_of(
            st.none(), st.tuples(st.sampled_from(["crm", "form"]), st.integers(0, 2))
        ),
    }
).filter(lambda i: any(v is not None for v in i.values()))


def arguments(spec: dict) -> dict:
    fields: dict = {"source": spec["external"][0] if spec["external"] else "form"}
    if spec["phone"] is not None:
        fields["phone"] = phone_text(*spec["phone"])
    if spec["email"] is not None:
        fields["email"] = f"Person{spec['email']}@Example.ru"
    if spec["external"] is not None:
        fields["external_id"] = f"ext-{spec['external'][1]}"
    return fields


def keys(spec: dict) -> list[tuple]:
    """The intake's keys in matching order: external id, phone, e-mail."""
    found: list[tuple] = []
    if spec["external"] is not None:
        found.append(("external", spec["external"][0], f"ext-{spec['external'][1]}"))
    if spec["phone"] is not None:
        found.append(("phone", normalized_phone(spec["phone"][0])))
    if spec["email"] is not None:
        found.append(("email", f"person{spec['email']}@example.ru"))
    return found


def model(specs: list[dict]) -> tuple[list[int], dict[tuple, int]]:
    """The rules, one intake at a time: (card number per intake, owner of every key)."""
    owner: dict[tuple, int] = {}
    returned: list[int] = []
    for spec in specs:
        wanted = keys(spec)
        matched = next((owner[k] for k in wanted if k in owner), None)
        card = matched if matched is not None else len(set(owner.values()) | set(returned))
        for key in wanted:
            owner.setdefault(key, card)
        returned.append(card)
    return returned, owner


async def stored_owners(database) -> dict[tuple, uuid.UUID]:
    owners: dict[tuple, uuid.UUID] = {}
    for contact in await contacts(database):
        owners[(contact.kind, contact.value)] = contact.customer_id
    for external in await external_ids(database):
        owners[("external", external.source, external.external_id)] = external.customer_id
    return owners


async def _reset(database) -> None:
    async with database.transaction() as session:
        for model_class in (TimelineEntry, Contact, ExternalId, Customer, OutboxEvent):
            await session.execute(delete(model_class))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(specs=st.lists(one_intake, min_size=1, max_size=12))
async def test_random_intakes_partition_contacts_exactly_as_the_rules_say(database, specs):
    await _reset(database)
    refs = [await intake(database, **arguments(spec)) for spec in specs]

    expected_cards, expected_owner = model(specs)
    # The card numbers of the model and the ids of the database correspond one to one.
    mapping: dict[int, uuid.UUID] = {}
    for number, ref in zip(expected_cards, refs, strict=True):
        assert mapping.setdefault(number, ref.id) == ref.id
    assert len(set(mapping.values())) == len(mapping)
    assert [ref.created for ref in refs] == [
        number not in expected_cards[:i] for i, number in enumerate(expected_cards)
    ]
    owners = await stored_owners(database)
    assert owners == {key: mapping[card] for key, card in expected_owner.items()}
    assert len(await cards(database)) == len(mapping)


async def test_concurrent_intakes_of_one_phone_end_with_one_card_for_everybody(database):
    notations = [phone_text(1, n % 3) for n in range(24)]
    refs = await asyncio.gather(*(intake(database, phone=text) for text in notations))
    assert len({ref.id for ref in refs}) == 1
    assert sum(ref.created for ref in refs) == 1
    (card,) = await cards(database)
    assert [c.value for c in await contacts(database)] == [normalized_phone(1)]
    assert card.id == refs[0].id


async def test_concurrent_intakes_of_one_external_id_and_phone_with_different_emails(database):
    specs = [{"source": "crm", "external_id": "C-9", "phone": phone_text(2, n % 3),
              "email": f"p{n}@example.ru"} for n in range(12)]  # fmt: skip
    refs = await asyncio.gather(*(intake(database, **spec) for spec in specs))
    (card,) = await cards(database)
    assert {ref.id for ref in refs} == {card.id}
    info = await customers_info(database, card.id)
    assert len(info.emails) == 12  # every new e-mail was added to the one card


async def customers_info(database, customer_id):
    async with database.reader() as session:
        return await customers.get_customer(session, customer_id)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(specs=st.lists(one_intake, min_size=2, max_size=16))
async def test_concurrent_random_intakes_keep_the_invariants(database, specs):
    await _reset(database)
    refs = await asyncio.gather(*(intake(database, **arguments(spec)) for spec in specs))

    owners = await stored_owners(database)
    # Every key of every intake is held, by exactly one card (the constraints), and each intake
    # got a card holding one of its keys: the first one any card held when it looked.
    for spec, ref in zip(specs, refs, strict=True):
        wanted = keys(spec)
        assert all(key in owners for key in wanted)
        assert ref.id in {owners[key] for key in wanted}
    # No card left behind by a lost race: each holds a key, and was reported created once.
    stored = {card.id for card in await cards(database)}
    assert stored == set(owners.values())
    created = Counter(ref.id for ref in refs if ref.created)
    assert set(created) == stored
    assert set(created.values()) == {1}
