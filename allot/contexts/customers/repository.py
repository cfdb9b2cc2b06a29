"""All SQL of the customers context.

Contacts, external ids and timeline entries are read and written as plain rows (Core), never as
ORM objects: merging moves them with one UPDATE, and an identity map holding yesterday's
`customer_id` would then hand out stale rows. Cards are ORM objects, always re-read from the
database (`populate_existing`) for the same reason.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, delete, false, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel.db.deferred import defer_insert
from allot.kernel.db.engine import insert_ignoring_conflicts
from allot.kernel.pagination import PageParams, paginate

from .models import Contact, Customer, ExternalId, TimelineEntry

CUSTOMERS_TABLE: Any = Customer.__table__
TIMELINE_TABLE: Any = TimelineEntry.__table__

# A contact key is ("phone" | "email", normalized value); an external id key (source, id).
ContactKey = tuple[str, str]
ExternalKey = tuple[str, str]
# Merges are flattened, so one hop is the norm; the bound only stops a corrupted cycle.
MAX_MERGE_HOPS = 20


async def insert_ignoring_conflict(
    session: AsyncSession, model: Any, values: dict[str, Any]
) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING; True when the row went in.

    Not a caught IntegrityError: a failed statement aborts a PostgreSQL transaction, whereas a
    skipped insert leaves it usable (and waits for a concurrent inserter of the same key to
    finish, so the answer is final)."""
    table = getattr(model, "__table__", model)
    result: Any = await session.execute(insert_ignoring_conflicts(session, table), values)
    return bool(result.rowcount == 1)


# -- cards ------------------------------------------------------------------------------------
async def get_card(
    session: AsyncSession, customer_id: uuid.UUID, *, lock: bool = False
) -> Customer | None:
    """The card, fresh from the database; `lock` holds its row (PostgreSQL) until commit."""
    statement = (
        select(Customer).where(Customer.id == customer_id).execution_options(populate_existing=True)
    )
    if lock:
        statement = statement.with_for_update()
    return (await session.execute(statement)).scalar_one_or_none()


async def get_cards(
    session: AsyncSession, ids: Iterable[uuid.UUID], *, lock: bool = False
) -> dict[uuid.UUID, Customer]:
    """Several cards; locked in ascending id order so two mergers never deadlock."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    statement = (
        select(Customer)
        .where(Customer.id.in_(wanted))
        .order_by(Customer.id)
        .execution_options(populate_existing=True)
    )
    if lock:
        statement = statement.with_for_update()
    return {card.id: card for card in (await session.execute(statement)).scalars()}


async def card_rows(session: AsyncSession, ids: Iterable[uuid.UUID]) -> Sequence[Any]:
    """Rows (id, kind, name, source, consent, created_at, merged_into_id) of these cards, for
    reading only: no ORM objects to build (a page of leads shows 50 cards)."""
    wanted = list(set(ids))
    if not wanted:
        return []
    return (await session.execute(_card_rows_statement(), {"p_ids": wanted})).all()


@functools.cache
def _card_rows_statement() -> Any:
    cards = Customer.__table__.c
    return select(
        cards.id,
        cards.kind,
        cards.name,
        cards.source,
        cards.consent,
        cards.created_at,
        cards.merged_into_id,
    ).where(cards.id.in_(bindparam("p_ids", expanding=True)))


@functools.cache
def _merged_into_statement() -> Any:
    # Run for every lead event the timeline takes in: built once (see leads' intake path).
    return select(Customer.merged_into_id).where(Customer.id == bindparam("p_id"))


async def resolve_merged(session: AsyncSession, customer_id: uuid.UUID) -> uuid.UUID | None:
    """The live card a (possibly merged) card id stands for; None for an unknown id."""
    current = customer_id
    for _ in range(MAX_MERGE_HOPS):
        row = (await session.execute(_merged_into_statement(), {"p_id": current})).one_or_none()
        if row is None:
            return None
        if row.merged_into_id is None:
            return current
        current = row.merged_into_id
    raise RuntimeError(f"Merge chain of customer {customer_id} does not end")


async def ids_merged_into(session: AsyncSession, customer_id: uuid.UUID) -> list[uuid.UUID]:
    statement = select(Customer.id).where(Customer.merged_into_id == customer_id)
    return list((await session.execute(statement)).scalars())


async def repoint_merged(session: AsyncSession, from_id: uuid.UUID, into_id: uuid.UUID) -> None:
    """Cards merged into `from_id` earlier now point straight at `into_id` (chains stay flat)."""
    await session.execute(
        update(Customer)
        .where(Customer.merged_into_id == from_id)
        .values(merged_into_id=into_id)
        .execution_options(synchronize_session=False)
    )


async def delete_card(session: AsyncSession, customer_id: uuid.UUID) -> None:
    """Remove a card this transaction created and lost the race for (never a real one)."""
    for model in (Contact, ExternalId, TimelineEntry):
        await session.execute(delete(model).where(model.customer_id == customer_id))
    card = await session.get(Customer, customer_id)
    if card is not None:
        await session.delete(card)
        await session.flush()


@dataclass(frozen=True, slots=True)
class SearchQuery:
    name_part: str | None = None  # casefolded
    phone_exact: str | None = None
    phone_digits: tuple[str, ...] = ()
    email_part: str | None = None


def _contains(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _having_contact(condition: Any) -> Any:
    return Customer.id.in_(select(Contact.customer_id).where(condition))


async def search(
    session: AsyncSession, query: SearchQuery, page: PageParams
) -> tuple[Sequence[Customer], str | None]:
    """Live (not merged) cards matching any part of `query`, newest first."""
    conditions: list[Any] = []
    if query.name_part:
        conditions.append(Customer.search_name.like(_contains(query.name_part), escape="\\"))
    if query.phone_exact:
        conditions.append(
            _having_contact(and_(Contact.kind == "phone", Contact.value == query.phone_exact))
        )
    for digits in query.phone_digits:
        like = Contact.value.like(_contains(digits), escape="\\")
        conditions.append(_having_contact(and_(Contact.kind == "phone", like)))
    if query.email_part:
        like = Contact.value.like(_contains(query.email_part), escape="\\")
        conditions.append(_having_contact(and_(Contact.kind == "email", like)))
    statement = select(Customer).where(Customer.merged_into_id.is_(None))
    if query != SearchQuery():
        statement = statement.where(or_(*conditions) if conditions else false())
    return await paginate(session, statement, Customer.id, page)


# -- contacts and external ids ----------------------------------------------------------------
async def contact_owners(
    session: AsyncSession, keys: Iterable[ContactKey]
) -> dict[ContactKey, uuid.UUID]:
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return {}
    params = {f"kind_{n}": kind for n, (kind, _) in enumerate(wanted)}
    params.update({f"value_{n}": value for n, (_, value) in enumerate(wanted)})
    rows = await session.execute(_contact_owners_statement(len(wanted)), params)
    return {(row.kind, row.value): row.customer_id for row in rows}


@functools.cache
def _contact_owners_statement(count: int) -> Any:
    # Built once per number of keys (one or two: a phone, an e-mail) — intake runs it every time.
    condition = or_(
        *(
            and_(Contact.kind == bindparam(f"kind_{n}"), Contact.value == bindparam(f"value_{n}"))
            for n in range(count)
        )
    )
    return select(Contact.kind, Contact.value, Contact.customer_id).where(condition)


async def external_id_owners(
    session: AsyncSession, keys: Iterable[ExternalKey]
) -> dict[ExternalKey, uuid.UUID]:
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return {}
    condition = or_(*(and_(ExternalId.source == s, ExternalId.external_id == e) for s, e in wanted))
    statement = select(ExternalId.source, ExternalId.external_id, ExternalId.customer_id)
    rows = await session.execute(statement.where(condition))
    return {(row.source, row.external_id): row.customer_id for row in rows}


async def contacts_of(session: AsyncSession, ids: Iterable[uuid.UUID]) -> Sequence[Any]:
    """Rows (id, customer_id, kind, value, source, created_at), oldest first per card."""
    return (await session.execute(_contacts_of_statement(), {"p_ids": list(ids)})).all()


async def external_ids_of(session: AsyncSession, ids: Iterable[uuid.UUID]) -> Sequence[Any]:
    """Rows (id, customer_id, source, external_id), oldest first per card."""
    return (await session.execute(_external_ids_of_statement(), {"p_ids": list(ids)})).all()


# Read for every card shown (a page of leads reads 50): built once, of the tables' own columns,
# so that no statement is built or run through the ORM's compile step per page. Being Core
# statements they do not autoflush: a unit of work that changed contacts or cards through the
# ORM flushes before reading them back here (none does today: they read before they change).
@functools.cache
def _contacts_of_statement() -> Any:
    contacts = Contact.__table__.c
    return (
        select(
            contacts.id,
            contacts.customer_id,
            contacts.kind,
            contacts.value,
            contacts.source,
            contacts.created_at,
        )
        .where(contacts.customer_id.in_(bindparam("p_ids", expanding=True)))
        .order_by(contacts.created_at, contacts.id)
    )


@functools.cache
def _external_ids_of_statement() -> Any:
    external = ExternalId.__table__.c
    return (
        select(external.id, external.customer_id, external.source, external.external_id)
        .where(external.customer_id.in_(bindparam("p_ids", expanding=True)))
        .order_by(external.created_at, external.id)
    )


async def delete_contacts(session: AsyncSession, contact_ids: Iterable[uuid.UUID]) -> None:
    wanted = list(contact_ids)
    if wanted:
        await session.execute(delete(Contact).where(Contact.id.in_(wanted)))


async def move_children(session: AsyncSession, from_id: uuid.UUID, into_id: uuid.UUID) -> None:
    """Contacts, external ids and timeline of one card become another's."""
    for model in (Contact, ExternalId, TimelineEntry):
        await session.execute(
            update(model)
            .where(model.customer_id == from_id)
            .values(customer_id=into_id)
            .execution_options(synchronize_session=False)
        )


async def rewrite_values(
    session: AsyncSession, model: Any, column: str, values: dict[uuid.UUID, Any]
) -> None:
    """Set `column` per row id (erasure): one executemany, however many rows."""
    if values:
        await session.execute(
            update(model), [{"id": row_id, column: value} for row_id, value in values.items()]
        )


# -- timeline ---------------------------------------------------------------------------------
def add_timeline_entry(session: AsyncSession, values: dict[str, Any]) -> None:
    # Deferred: written with the unit of work's other entries in one INSERT at commit.
    defer_insert(session, TIMELINE_TABLE, values)


def insert_card(session: AsyncSession, values: dict[str, Any]) -> Any:
    return session.execute(insert(CUSTOMERS_TABLE), values)


async def timeline(session: AsyncSession, customer_id: uuid.UUID, limit: int) -> Sequence[Any]:
    """The latest `limit` entries, newest first."""
    statement = (
        select(
            TimelineEntry.id,
            TimelineEntry.occurred_at,
            TimelineEntry.kind,
            TimelineEntry.title,
            TimelineEntry.reference,
            TimelineEntry.data,
        )
        .where(TimelineEntry.customer_id == customer_id)
        .order_by(TimelineEntry.occurred_at.desc(), TimelineEntry.id.desc())
        .limit(limit)
    )
    return (await session.execute(statement)).all()


async def timeline_data_of(session: AsyncSession, ids: Iterable[uuid.UUID]) -> Sequence[Any]:
    statement = select(TimelineEntry.id, TimelineEntry.data).where(
        TimelineEntry.customer_id.in_(list(ids))
    )
    return (await session.execute(statement)).all()
