"""The two ends a card can come to: merged into another card (a person decided they are the same
customer), or erased (the person asked; 152-FZ / GDPR).

Both keep every id: a merged card points at its survivor (`merged_into_id`), so anything holding
the old id still finds the customer; an erased card keeps its row with the personal values
replaced, and the audit trail stays whole with pseudonyms in place of the values.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts import audit
from allot.kernel.clock import utcnow
from allot.kernel.errors import Conflict, NotFound, ValidationFailed
from allot.kernel.events import publish
from allot.kernel.i18n import N_

from . import events, repository
from .models import ERASED_PREFIX, Contact, Customer, ExternalId, TimelineEntry
from .normalize import search_form
from .schemas import CustomerInfo
from .service import OBJECT_TYPE, PERSONAL_FIELDS, field_path, info_of
from .timeline import add_timeline_entry, erased_data


def _snapshot(card: Customer, contacts: Sequence[Any], externals: Sequence[Any]) -> dict[str, Any]:
    return {
        "kind": card.kind,
        "name": card.name,
        "consent": card.consent,
        "phones": sorted(
            r.value for r in contacts if r.customer_id == card.id and r.kind == "phone"
        ),
        "emails": sorted(
            r.value for r in contacts if r.customer_id == card.id and r.kind == "email"
        ),
        "external_ids": sorted(
            f"{r.source}:{r.external_id}" for r in externals if r.customer_id == card.id
        ),
    }


def _check_live(card: Customer) -> None:
    if card.merged_into_id is not None:
        raise Conflict(
            detail="This card was already merged into another",
            extra={"merged_into_id": str(card.merged_into_id)},
        )
    if card.erased_at is not None:
        raise Conflict(detail="This card was erased")


async def merge(
    session: AsyncSession, into_id: uuid.UUID, from_id: uuid.UUID, *, field_prefix: str = "body"
) -> CustomerInfo:
    """Merge card `from_id` into `into_id`: its contacts, external ids and timeline move over, a
    missing name or consent answer is taken from it, and it points at the survivor from now on.

    Both rows are locked (in id order, so crossing merges cannot deadlock) before anything is
    checked, and every check comes before the first write."""
    from_field = field_path(field_prefix, "from_id")
    if into_id == from_id:
        raise ValidationFailed.on(from_field, "A card cannot be merged into itself", "same_card")
    cards = await repository.get_cards(session, [into_id, from_id], lock=True)
    survivor, merged = cards.get(into_id), cards.get(from_id)
    if survivor is None:
        raise NotFound(detail="No such customer")
    if merged is None:
        raise ValidationFailed.on(from_field, "No such customer", "not_found")
    _check_live(survivor)
    _check_live(merged)

    contacts = await repository.contacts_of(session, [into_id, from_id])
    externals = await repository.external_ids_of(session, [into_id, from_id])
    before_survivor = _snapshot(survivor, contacts, externals)
    before_merged = _snapshot(merged, contacts, externals)

    await repository.move_children(session, from_id, into_id)
    await repository.repoint_merged(session, from_id, into_id)
    if survivor.name is None and merged.name is not None:
        survivor.name, survivor.search_name = merged.name, search_form(merged.name)
    if survivor.consent is None and merged.consent is not None:
        survivor.consent = merged.consent
        survivor.consent_source, survivor.consent_at = merged.consent_source, merged.consent_at
    merged.merged_into_id, merged.merged_at = into_id, utcnow()

    after_survivor = {
        "kind": survivor.kind,
        "name": survivor.name,
        "consent": survivor.consent,
        **{
            key: sorted(before_survivor[key] + before_merged[key])
            for key in ("phones", "emails", "external_ids")
        },
        "merged_from_id": str(from_id),
    }
    await audit.record(
        session,
        action="customers.customer.merged",
        object_type=OBJECT_TYPE,
        object_id=into_id,
        before=before_survivor,
        after=after_survivor,
        personal_fields=PERSONAL_FIELDS,
    )
    await audit.record(
        session,
        action="customers.customer.merged_away",
        object_type=OBJECT_TYPE,
        object_id=from_id,
        before=before_merged,
        after={"merged_into_id": str(into_id)},
        personal_fields=PERSONAL_FIELDS,
    )
    await add_timeline_entry(
        session,
        into_id,
        kind="customer.merged",
        title=N_("Another card was merged into this one"),
        reference=str(from_id),
        data={"from_id": str(from_id)},
    )
    await publish(
        session,
        type=events.CUSTOMER_MERGED,
        aggregate_type=OBJECT_TYPE,
        aggregate_id=into_id,
        payload={"into_id": str(into_id), "from_id": str(from_id)},
    )
    await session.flush()
    return await info_of(session, survivor)


async def _with_merged_cards(session: AsyncSession, customer_id: uuid.UUID) -> list[uuid.UUID]:
    """The card and every card merged into it: their data is all the same person's."""
    found, frontier = [customer_id], [customer_id]
    while frontier:
        children = [
            c for parent in frontier for c in await repository.ids_merged_into(session, parent)
        ]
        frontier = [c for c in children if c not in found]
        found += frontier
    return found


async def erase_customer(session: AsyncSession, customer_id: uuid.UUID) -> None:
    """Erase a person: names, phones, e-mails, external ids and free text on their timeline are
    replaced, the audit trail pseudonymised; ids, dates, sources and the consent record stay.
    Idempotent: erasing an erased card changes nothing."""
    card = await repository.get_card(session, customer_id, lock=True)
    if card is None:
        raise NotFound(detail="No such customer")
    if card.merged_into_id is not None:
        raise Conflict(
            detail="This card was merged into another; erase that one",
            extra={"merged_into_id": str(card.merged_into_id)},
        )
    if card.erased_at is not None:
        return
    subjects = await _with_merged_cards(session, card.id)
    now = utcnow()
    contacts = await repository.contacts_of(session, subjects)
    externals = await repository.external_ids_of(session, subjects)
    # The replacement must stay unique (the UNIQUE constraints) and must not be a real value.
    await repository.rewrite_values(
        session, Contact, "value", {row.id: ERASED_PREFIX + row.id.hex for row in contacts}
    )
    await repository.rewrite_values(
        session,
        ExternalId,
        "external_id",
        {row.id: ERASED_PREFIX + row.id.hex for row in externals},
    )
    timeline_updates: dict[uuid.UUID, Any] = {}
    for row in await repository.timeline_data_of(session, subjects):
        data = erased_data(row.data or {})
        if data is not None:
            timeline_updates[row.id] = data
    await repository.rewrite_values(session, TimelineEntry, "data", timeline_updates)
    for subject in (await repository.get_cards(session, subjects, lock=True)).values():
        subject.name, subject.search_name, subject.erased_at = None, None, now
    await audit.record(
        session,
        action="customers.customer.erased",
        object_type=OBJECT_TYPE,
        object_id=card.id,
        after={"erased_at": now, "merged_cards_erased": [str(s) for s in subjects[1:]]},
    )
    await add_timeline_entry(
        session, card.id, kind="customer.erased", title=N_("Personal data erased")
    )
    for subject_id in subjects:
        await audit.pseudonymise_subject(session, object_type=OBJECT_TYPE, object_id=subject_id)
    await publish(
        session,
        type=events.CUSTOMER_ERASED,
        aggregate_type=OBJECT_TYPE,
        aggregate_id=card.id,
        payload={"customer_id": str(card.id)},
    )
    await session.flush()
