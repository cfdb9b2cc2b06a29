"""Set-based intake for bulk work (imports): many people in a constant number of statements.

`intake_many` gives each person the card `intake` would give them if they were taken in one by
one, in order: the card holding the first of their keys (phone, then e-mail), else a new card;
a new key of a reused card is added to it, a key held by ANOTHER card stays off it (merging is a
person's decision), and a reused card without a name gets the person's name. Two people of one
call sharing a key therefore share a card.

The statements, whatever the number of people: one SELECT of the cards holding any of the keys
(and a row lock on those cards, as `intake` takes one), then executemany INSERTs of the new
cards, their contacts and timeline entries, the name updates, and the outbox events.

Concurrency (PostgreSQL): a key claimed by a concurrent intake between the lookup and the INSERT
makes the contacts INSERT fail on the UNIQUE constraint, which aborts the whole transaction: the
caller runs the batch again (nothing of it was written), and the lookup then finds the new owner.
So a key never ends up on two cards and no card is left half-made. (`intake` resolves the same
race per person with ON CONFLICT DO NOTHING and a retry loop.)

What is recorded, as `intake` records it: per new card a `customers.customer.created` event and a
"Card created" timeline entry; per reused card that changed, one `customers.customer.updated`
event naming what changed. The audit entry is the caller's, one for the whole batch (an import
writes one per batch, not one per card).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, and_, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel.clock import utcnow
from allot.kernel.context import ContextSnapshot
from allot.kernel.db.bulk_insert import insert_rows
from allot.kernel.events.outbox import NewEvent, publish_many
from allot.kernel.i18n import N_
from allot.kernel.ids import new_ids

from . import events
from .models import Contact, Customer, TimelineEntry
from .normalize import clean_name, clean_source, search_form

CARDS: Table = Customer.__table__  # type: ignore[assignment]
CONTACTS: Table = Contact.__table__  # type: ignore[assignment]
TIMELINE: Table = TimelineEntry.__table__  # type: ignore[assignment]

CREATED_TITLE = N_("Card created (source: %(source)s)")


@dataclass(frozen=True, slots=True)
class Person:
    """One person to take in: name, and phone (E.164) and e-mail already normalized
    (`normalize_phone`, `normalize_email`); a blank is None."""

    name: str | None
    phone: str | None = None
    email: str | None = None


@dataclass(slots=True)
class BulkIntake:
    """The card of each person (same order), and how many cards were made or changed."""

    customer_ids: list[uuid.UUID] = field(default_factory=list)
    created: int = 0
    updated: int = 0


@dataclass(slots=True)
class _Card:
    id: uuid.UUID
    new: bool
    name: str | None
    name_added: bool = False
    added: dict[str, list[str]] = field(default_factory=dict)  # kind -> values added


def _keys(person: Person) -> list[tuple[str, str]]:
    return [(k, v) for k, v in (("phone", person.phone), ("email", person.email)) if v]


async def _owners(
    session: AsyncSession, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], tuple[uuid.UUID, str | None]]:
    """(kind, value) -> (card id, card name) for every key some card holds; locks those cards
    (PostgreSQL) in id order, as `intake` locks the card it reuses."""
    phones = [v for k, v in keys if k == "phone"]
    emails = [v for k, v in keys if k == "email"]
    if not phones and not emails:
        return {}
    params = {"p_phones": phones} if phones else {}
    if emails:
        params["p_emails"] = emails
    owners: dict[tuple[str, str], tuple[uuid.UUID, str | None]] = {}
    for row in await session.execute(_owners_statement(bool(phones), bool(emails)), params):
        if row.merged_into_id is not None:
            # Merging moves contacts in the merge's transaction, so this is a merge committed
            # between our lookup's snapshot and its lock: look again from scratch.
            raise ConcurrentChange("a card holding an imported contact was merged meanwhile")
        owners[(row.kind, row.value)] = (row.id, row.name)
    return owners


@functools.cache
def _owners_statement(phones: bool, emails: bool) -> Any:
    """`_owners`' SELECT for phones, e-mails or both (parameters `p_phones`, `p_emails`), built
    once: building it cost more than SQLite takes to run it (group commit runs it per batch)."""
    conditions = []
    if phones:
        values = bindparam("p_phones", expanding=True, type_=CONTACTS.c.value.type)
        conditions.append(and_(CONTACTS.c.kind == "phone", CONTACTS.c.value.in_(values)))
    if emails:
        values = bindparam("p_emails", expanding=True, type_=CONTACTS.c.value.type)
        conditions.append(and_(CONTACTS.c.kind == "email", CONTACTS.c.value.in_(values)))
    return (
        select(
            CONTACTS.c.kind,
            CONTACTS.c.value,
            CARDS.c.id,
            CARDS.c.name,
            CARDS.c.merged_into_id,
        )
        .join(CARDS, CARDS.c.id == CONTACTS.c.customer_id)
        .where(or_(*conditions))
        .order_by(CARDS.c.id)
        .with_for_update(of=CARDS)
    )


class ConcurrentChange(Exception):
    """The cards changed under the batch (PostgreSQL); nothing was written: run it again."""


async def intake_many(
    session: AsyncSession,
    source: str,
    people: Sequence[Person],
    *,
    callers: Sequence[ContextSnapshot] | None = None,
) -> BulkIntake:
    """The card of each person, as `intake(source=..., name=..., phone=..., email=...)` would
    return it for each in turn, in the caller's transaction (see the module docstring).

    `callers[i]`, when given, is the request person i came from (group commit): the events of a
    card are recorded as that of the first person who made or changed it."""
    result = BulkIntake()
    if not people:
        return result
    source = clean_source(source)
    now = utcnow()
    keyed = [(person, _keys(person)) for person in people]
    wanted = {key for _, keys in keyed for key in keys}
    found = await _owners(session, wanted)
    cards: dict[uuid.UUID, _Card] = {}
    holder: dict[tuple[str, str], uuid.UUID] = {}
    for key, (card_id, name) in found.items():
        holder[key] = card_id
        if card_id not in cards:
            cards[card_id] = _Card(card_id, new=False, name=name)
    new_cards: dict[uuid.UUID, dict[str, Any]] = {}
    contacts: list[dict[str, Any]] = []
    made_by: dict[uuid.UUID, int] = {}  # card -> the first person who made or changed it
    card_ids = iter(new_ids(len(people)))  # made at once; those no new card needs go unused
    for position, (person, keys) in enumerate(keyed):
        name = clean_name(person.name)
        if name is None and not keys:
            raise ValueError("A person needs a name, a phone or an e-mail")
        owner = next((holder[key] for key in keys if key in holder), None)
        if owner is None:
            card = _Card(next(card_ids), new=True, name=name)
            cards[card.id] = card
            new_cards[card.id] = {
                "id": card.id,
                "kind": "person",
                "name": name,
                "search_name": search_form(name),
                "source": source,
                "consent": None,
                "consent_source": None,
                "consent_at": None,
                "merged_into_id": None,
                "merged_at": None,
                "erased_at": None,
                "created_at": now,
                "updated_at": now,
            }
        else:
            card = cards[owner]
            if name is not None and card.name is None:
                card.name, card.name_added = name, not card.new
                if card.new:  # a card of this batch, not inserted yet
                    new_cards[card.id].update(name=name, search_name=search_form(name))
        for kind, value in keys:
            if (kind, value) in holder:
                continue  # on this card already, or on another one (never merged here)
            holder[(kind, value)] = card.id
            contacts.append(
                {
                    "id": None,  # below, all at once
                    "customer_id": card.id,
                    "kind": kind,
                    "value": value,
                    "source": source,
                    "created_at": now,
                }
            )
            if not card.new:
                card.added.setdefault(kind, []).append(value)
        if card.new or card.added or card.name_added:
            made_by.setdefault(card.id, position)
        result.customer_ids.append(card.id)
    if new_cards:
        await insert_rows(session, CARDS, list(new_cards.values()))
    for contact, contact_id in zip(contacts, new_ids(len(contacts)), strict=True):
        contact["id"] = contact_id
    if contacts:
        # A key claimed meanwhile by a concurrent intake fails this INSERT (UNIQUE): see above.
        await insert_rows(session, CONTACTS, contacts)
    renamed = [c for c in cards.values() if c.name_added]
    if renamed:
        await session.execute(
            update(CARDS).where(CARDS.c.id == bindparam("card_id")),
            [
                {
                    "card_id": c.id,
                    "name": c.name,
                    "search_name": search_form(c.name),
                    "updated_at": now,
                }
                for c in renamed
            ],
        )
    changed = [c for c in cards.values() if not c.new and (c.added or c.name_added)]
    result.created, result.updated = len(new_cards), len(changed)
    if new_cards:
        data = {"source": source}  # one document for every row: encoded once (bulk_insert)
        await insert_rows(
            session,
            TIMELINE,
            [
                {
                    "id": entry_id,
                    "customer_id": card_id,
                    "occurred_at": now,
                    "kind": "customer.created",
                    "title": CREATED_TITLE,
                    "reference": None,
                    "data": data,
                }
                for card_id, entry_id in zip(new_cards, new_ids(len(new_cards)), strict=True)
            ],
        )
    await publish_many(
        session,
        [
            NewEvent(
                type=events.CUSTOMER_CREATED,
                aggregate_type=events.CUSTOMER_AGGREGATE,
                aggregate_id=card_text,  # the outbox stores str(aggregate_id): made once
                payload={"customer_id": card_text, "kind": "person", "source": source},
                caller=callers[made_by[card_id]] if callers else None,
            )
            for card_id, card_text in ((card_id, str(card_id)) for card_id in new_cards)
        ]
        + [
            NewEvent(
                type=events.CUSTOMER_UPDATED,
                aggregate_type=events.CUSTOMER_AGGREGATE,
                aggregate_id=card.id,
                payload={"customer_id": str(card.id), "changed": _changed(card)},
                caller=callers[made_by[card.id]] if callers else None,
            )
            for card in changed
        ],
    )
    return result


def _changed(card: _Card) -> list[str]:
    names = [f"added_{kind}s" for kind in card.added]
    if card.name_added:
        names.append("name")
    return sorted(names)
