"""Customer use cases shared by intake, editing and merging (recording creations, updates and
consent), and reading: cards with contacts, search, the card page's detail.

Validates, changes state, writes the audit row and the outbox event in the caller's
transaction. Never commits.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts import audit
from allot.kernel.clock import utcnow
from allot.kernel.errors import Conflict, NotFound, ValidationFailed
from allot.kernel.events import publish
from allot.kernel.i18n import N_
from allot.kernel.ids import new_id
from allot.kernel.pagination import PageParams

from . import events, repository
from .models import ERASED_PREFIX, Customer
from .normalize import normalize_phone, search_form
from .repository import ContactKey, ExternalKey, SearchQuery
from .schemas import CustomerInfo
from .timeline import add_timeline_entry

OBJECT_TYPE = events.CUSTOMER_AGGREGATE
PERSONAL_FIELDS = ("name", "phones", "emails", "external_ids", "added_phones", "added_emails",
                   "added_external_ids")  # fmt: skip
TIMELINE_SIZE = 50


def field_path(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def new_card(*, kind: str, name: str | None, source: str, consent: bool | None) -> Customer:
    now = utcnow()
    return Customer(
        id=new_id(),
        created_at=now,
        updated_at=now,
        merged_into_id=None,
        merged_at=None,
        erased_at=None,
        kind=kind,
        name=name,
        search_name=search_form(name),
        source=source,
        consent=consent,
        consent_source=source if consent is not None else None,
        consent_at=utcnow() if consent is not None else None,
    )


def card_row(card: Customer) -> dict[str, Any]:
    """The card's column values, for a Core INSERT."""
    return {column.key: getattr(card, column.key) for column in Customer.__table__.columns}


async def set_consent(session: AsyncSession, card: Customer, consent: bool, source: str) -> None:
    """Record a consent answer: what, when and where from (the law asks for all three)."""
    card.consent, card.consent_source, card.consent_at = consent, source, utcnow()
    title = N_("Consent to data processing given") if consent else N_("Consent withdrawn")
    await add_timeline_entry(
        session, card.id, kind="customer.consent", title=title, data={"source": source}
    )


async def record_created(
    session: AsyncSession,
    card: Customer,
    contacts: Sequence[ContactKey],
    externals: Sequence[ExternalKey],
) -> None:
    after = {
        "kind": card.kind,
        "name": card.name,
        "source": card.source,
        "consent": card.consent,
        "phones": [v for k, v in contacts if k == "phone"],
        "emails": [v for k, v in contacts if k == "email"],
        "external_ids": [f"{s}:{e}" for s, e in externals],
    }
    await audit.record(
        session,
        action="customers.customer.created",
        object_type=OBJECT_TYPE,
        object_id=card.id,
        after=after,
        personal_fields=PERSONAL_FIELDS,
    )
    await publish(
        session,
        type=events.CUSTOMER_CREATED,
        aggregate_type=OBJECT_TYPE,
        aggregate_id=card.id,
        payload={"customer_id": str(card.id), "kind": card.kind, "source": card.source},
    )
    await add_timeline_entry(
        session,
        card.id,
        kind="customer.created",
        title=N_("Card created (source: %(source)s)"),
        data={"source": card.source},
        known_current=True,
    )


async def record_updated(
    session: AsyncSession, customer_id: uuid.UUID, before: dict[str, Any], after: dict[str, Any]
) -> None:
    await audit.record(
        session,
        action="customers.customer.updated",
        object_type=OBJECT_TYPE,
        object_id=customer_id,
        before=before,
        after=after,
        personal_fields=PERSONAL_FIELDS,
    )
    await publish(
        session,
        type=events.CUSTOMER_UPDATED,
        aggregate_type=OBJECT_TYPE,
        aggregate_id=customer_id,
        payload={"customer_id": str(customer_id), "changed": sorted(set(before) | set(after))},
    )


# -- guards ---------------------------------------------------------------------------------
async def editable_card(session: AsyncSession, customer_id: uuid.UUID) -> Customer:
    """The card, locked for the change; a merged or erased card is read-only."""
    card = await repository.get_card(session, customer_id, lock=True)
    if card is None:
        raise NotFound(detail="No such customer")
    if card.merged_into_id is not None:
        raise Conflict(
            detail="This card was merged into another; change that one",
            extra={"merged_into_id": str(card.merged_into_id)},
        )
    if card.erased_at is not None:
        raise Conflict(detail="This card was erased")
    return card


# -- reading ----------------------------------------------------------------------------------
def _build_infos(
    cards: Sequence[Any], contacts: Sequence[Any], externals: Sequence[Any]
) -> dict[uuid.UUID, CustomerInfo]:
    """`cards`: Customer objects, or rows with the columns `repository.card_rows` reads."""
    phones: dict[uuid.UUID, list[str]] = {card.id: [] for card in cards}
    emails: dict[uuid.UUID, list[str]] = {card.id: [] for card in cards}
    external_ids: dict[uuid.UUID, list[tuple[str, str]]] = {card.id: [] for card in cards}
    for row in contacts:  # erased rows keep their ids, but are no phone or address to use
        if row.value.startswith(ERASED_PREFIX):
            continue
        (phones if row.kind == "phone" else emails)[row.customer_id].append(row.value)
    for row in externals:
        if not row.external_id.startswith(ERASED_PREFIX):
            external_ids[row.customer_id].append((row.source, row.external_id))
    return {
        card.id: CustomerInfo(
            id=card.id,
            kind=card.kind,
            name=card.name,
            phones=tuple(phones[card.id]),
            emails=tuple(emails[card.id]),
            external_ids=tuple(external_ids[card.id]),
            source=card.source,
            consent=card.consent,
            created_at=card.created_at,
            merged_into_id=card.merged_into_id,
        )
        for card in cards
    }


async def _infos(session: AsyncSession, cards: Sequence[Any]) -> dict[uuid.UUID, CustomerInfo]:
    """Cards with their contacts and external ids: two queries however many cards."""
    if not cards:
        return {}
    ids = [card.id for card in cards]
    contacts = await repository.contacts_of(session, ids)
    return _build_infos(cards, contacts, await repository.external_ids_of(session, ids))


async def info_of(session: AsyncSession, card: Customer) -> CustomerInfo:
    return (await _infos(session, [card]))[card.id]


async def get_customers(
    session: AsyncSession, ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, CustomerInfo]:
    return await _infos(session, await repository.card_rows(session, ids))


async def get_customer(session: AsyncSession, customer_id: uuid.UUID) -> CustomerInfo | None:
    return (await get_customers(session, [customer_id])).get(customer_id)


_PHONE_LIKE = re.compile(r"^[\d\s()+\-.]+$")
MIN_PHONE_SEARCH_DIGITS = 3


def parse_search(text: str) -> SearchQuery:
    """A search box: an e-mail (part), a phone (whole, normalized; or a run of digits) or a
    name (part)."""
    q = text.strip()
    if not q:
        return SearchQuery()
    if "@" in q:
        return SearchQuery(email_part=q.lower())
    digits = re.sub(r"\D", "", q)
    if _PHONE_LIKE.match(q) and len(digits) >= MIN_PHONE_SEARCH_DIGITS:
        try:
            return SearchQuery(phone_exact=normalize_phone(q))
        except ValidationFailed:
            # "8 912 34" typed with the trunk prefix is stored as "+7912 34..."
            variants = [digits] + (["7" + digits[1:]] if digits.startswith("8") else [])
            return SearchQuery(phone_digits=tuple(variants))
    return SearchQuery(name_part=q.casefold(), email_part=q.lower())


async def search_customers(
    session: AsyncSession, text: str, page: PageParams
) -> tuple[list[CustomerInfo], str | None]:
    cards, next_cursor = await repository.search(session, parse_search(text), page)
    infos = await _infos(session, list(cards))
    return [infos[card.id] for card in cards], next_cursor


@dataclass(frozen=True, slots=True)
class CustomerDetail:
    info: CustomerInfo
    card: Customer
    contacts: Sequence[Any]  # rows: kind, value, source, created_at
    timeline: Sequence[Any]  # rows: id, occurred_at, kind, title, reference, data; newest first


async def customer_detail(session: AsyncSession, customer_id: uuid.UUID) -> CustomerDetail:
    card = await repository.get_card(session, customer_id)
    if card is None:
        raise NotFound(detail="No such customer")
    contacts = await repository.contacts_of(session, [card.id])
    externals = await repository.external_ids_of(session, [card.id])
    info = _build_infos([card], contacts, externals)[card.id]
    entries = await repository.timeline(session, card.id, TIMELINE_SIZE)
    return CustomerDetail(info=info, card=card, contacts=contacts, timeline=entries)
