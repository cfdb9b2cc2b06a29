"""Intake: turn a contact from any source (a form, a call, a CRM) into a customer card,
reusing the card that already holds one of its keys.

Invariant: a normalized contact or external id belongs to at most one card, and intake
returns the card that holds the first of its keys (external id, then phone, then e-mail) found.
The UNIQUE constraints keep the first half under any concurrency; for the second, a new card
claims its keys with INSERT ... ON CONFLICT DO NOTHING, and a card that lost a key to a
concurrent intake is thrown away and the lookup repeated, as if the two had run one by one.
A key held by ANOTHER card than the one reused stays off it: merging is a person's decision.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel.clock import utcnow
from allot.kernel.errors import Conflict, ValidationFailed

from . import repository
from .models import EXTERNAL_ID_MAX_LENGTH, Contact, ExternalId
from .normalize import (
    check_kind,
    clean_name,
    clean_source,
    normalize_email,
    normalize_phone,
    search_form,
)
from .repository import ContactKey, ExternalKey
from .schemas import CustomerRef
from .service import (
    card_row,
    field_path,
    new_card,
    record_created,
    record_updated,
    set_consent,
)

# Each retry follows a concurrent intake that committed one of our keys; a handful is plenty.
MAX_INTAKE_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class IntakeKeys:
    """What identifies the person in one intake, in the order a match is looked for."""

    external: ExternalKey | None
    phone: str | None
    email: str | None

    @property
    def contacts(self) -> list[ContactKey]:
        return [(k, v) for k, v in (("phone", self.phone), ("email", self.email)) if v]

    @property
    def empty(self) -> bool:
        return self.external is None and not self.contacts


# -- intake -----------------------------------------------------------------------------------
async def intake(
    session: AsyncSession,
    *,
    source: str,
    name: str | None = None,
    phone: str | None = None,
    email: str | None = None,
    external_id: str | None = None,
    kind: str = "person",
    consent: bool | None = None,
    field_prefix: str = "body.customer",
) -> CustomerRef:
    source = clean_source(source, field_path(field_prefix, "source"))
    kind = check_kind(kind, field_path(field_prefix, "kind"))
    name = clean_name(name, field_path(field_prefix, "name"))
    external = (external_id or "").strip()
    if len(external) > EXTERNAL_ID_MAX_LENGTH:
        message = f"At most {EXTERNAL_ID_MAX_LENGTH} characters"
        raise ValidationFailed.on(field_path(field_prefix, "external_id"), message, "too_long")
    # A blank form field is a field not filled in, not an invalid contact.
    phone, email = (phone or "").strip(), (email or "").strip()
    keys = IntakeKeys(
        external=(source, external) if external else None,
        phone=normalize_phone(phone, field_path(field_prefix, "phone")) if phone else None,
        email=normalize_email(email, field_path(field_prefix, "email")) if email else None,
    )
    if keys.empty and name is None:
        raise ValidationFailed.on(
            field_path(field_prefix, "phone"),
            "Give at least a phone, an e-mail, an external id or a name",
            "required",
        )
    for _attempt in range(MAX_INTAKE_ATTEMPTS):
        contact_owners, external_owners = await _owners(session, keys)
        owner = _first_owner(keys, contact_owners, external_owners)
        if owner is not None:
            taken = set(contact_owners) | {("external", *k) for k in external_owners}
            reused = await _reuse(session, owner, keys, taken, name, consent, source)
            if reused is not None:
                return reused
            continue  # the owner was merged away meanwhile: look again
        card = new_card(kind=kind, name=name, source=source, consent=consent)
        # A plain INSERT, not an ORM flush: the card is written once and not changed here.
        await repository.insert_card(session, card_row(card))
        if await _claim_all(session, card.id, keys, source):
            await record_created(
                session, card, keys.contacts, [keys.external] if keys.external else []
            )
            return CustomerRef(card.id, created=True)
        await repository.delete_card(session, card.id)  # lost a key race: it never existed
    raise Conflict(detail="The customer's contacts changed hands repeatedly; try again")


async def _owners(
    session: AsyncSession, keys: IntakeKeys
) -> tuple[dict[ContactKey, uuid.UUID], dict[ExternalKey, uuid.UUID]]:
    contacts = await repository.contact_owners(session, keys.contacts)
    externals = (
        await repository.external_id_owners(session, [keys.external]) if keys.external else {}
    )
    return contacts, externals


def _first_owner(
    keys: IntakeKeys,
    contact_owners: dict[ContactKey, uuid.UUID],
    external_owners: dict[ExternalKey, uuid.UUID],
) -> uuid.UUID | None:
    if keys.external and keys.external in external_owners:
        return external_owners[keys.external]
    for key in keys.contacts:
        if key in contact_owners:
            return contact_owners[key]
    return None


async def _claim_all(
    session: AsyncSession, customer_id: uuid.UUID, keys: IntakeKeys, source: str
) -> bool:
    """Insert every key for a new card, in one global order (so claimers never deadlock);
    False as soon as one is already held by another card."""
    now = utcnow()
    if keys.external and not await repository.insert_ignoring_conflict(
        session,
        ExternalId,
        {
            "customer_id": customer_id,
            "source": keys.external[0],
            "external_id": keys.external[1],
            "created_at": now,
        },
    ):
        return False
    for kind, value in keys.contacts:
        values = {
            "customer_id": customer_id,
            "kind": kind,
            "value": value,
            "source": source,
            "created_at": now,
        }
        if not await repository.insert_ignoring_conflict(session, Contact, values):
            return False
    return True


async def _reuse(
    session: AsyncSession,
    owner_id: uuid.UUID,
    keys: IntakeKeys,
    taken: set[Any],
    name: str | None,
    consent: bool | None,
    source: str,
) -> CustomerRef | None:
    """Add this intake's new keys (and a missing name, a new consent answer) to the card that
    matched; None if that card turned out to be merged away."""
    target = await repository.resolve_merged(session, owner_id)
    card = await repository.get_card(session, target, lock=True) if target else None
    if card is None or card.merged_into_id is not None:
        return None
    now = utcnow()
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    if keys.external and ("external", *keys.external) not in taken:
        values = {
            "customer_id": card.id,
            "source": keys.external[0],
            "external_id": keys.external[1],
            "created_at": now,
        }
        if await repository.insert_ignoring_conflict(session, ExternalId, values):
            after["added_external_ids"] = [":".join(keys.external)]
    for kind, value in keys.contacts:
        if (kind, value) in taken:  # on this card already, or on another (never merged here)
            continue
        values = {
            "customer_id": card.id,
            "kind": kind,
            "value": value,
            "source": source,
            "created_at": now,
        }
        if await repository.insert_ignoring_conflict(session, Contact, values):
            after[f"added_{kind}s"] = [value]
    if name is not None and card.name is None:
        before["name"], after["name"] = None, name
        card.name, card.search_name = name, search_form(name)
    if consent is not None and consent != card.consent:
        before["consent"], after["consent"] = card.consent, consent
        await set_consent(session, card, consent, source)
    if after:
        await record_updated(session, card.id, before, after)
    return CustomerRef(card.id, created=False)
