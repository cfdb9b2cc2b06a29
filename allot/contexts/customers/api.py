"""Customers JSON API under /api/v1/customers: search, read (with contacts and timeline),
create by hand, edit, merge and erase.

Every staff member who works with customers sees every card (customers belong to the company,
not to an agent); what each may change is in the permissions declared in `__init__`.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Query
from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel.auth import Principal, require
from allot.kernel.idempotency import IdempotencyKey
from allot.kernel.pagination import Page, PageParams, page_params
from allot.kernel.web.routers import api_router
from allot.kernel.web.uow import ReadSession, WriteSession

from . import CUSTOMERS_ERASE, CUSTOMERS_MERGE, CUSTOMERS_READ, CUSTOMERS_WRITE, service
from .editing import create_customer, update_customer
from .lifecycle import erase_customer, merge
from .schemas import (
    ContactOut,
    CustomerCreate,
    CustomerDetailOut,
    CustomerOut,
    CustomerUpdate,
    MergeRequest,
    TimelineEntryOut,
)
from .timeline import entry_title

router = api_router("/customers", "customers")
Paging = Annotated[PageParams, Depends(page_params)]


async def _detail(session: AsyncSession, customer_id: uuid.UUID) -> CustomerDetailOut:
    detail = await service.customer_detail(session, customer_id)
    card = detail.card
    return CustomerDetailOut(
        **CustomerOut.of(detail.info).model_dump(),
        consent_source=card.consent_source,
        consent_at=card.consent_at,
        erased_at=card.erased_at,
        contacts=[
            ContactOut(kind=c.kind, value=c.value, source=c.source, created_at=c.created_at)
            for c in detail.contacts
        ],
        timeline=[
            TimelineEntryOut(
                id=e.id,
                occurred_at=e.occurred_at,
                kind=e.kind,
                title=entry_title(e.title, e.data or {}),
                reference=e.reference,
                data=e.data or {},
            )
            for e in detail.timeline
        ],
    )


@router.get("", response_model=Page[CustomerOut], summary="Search customers")
async def list_customers(
    session: ReadSession,
    paging: Paging,
    _: Annotated[Principal, require(CUSTOMERS_READ)],
    q: Annotated[
        str,
        Query(
            max_length=200,
            description="A name (part), an e-mail (part) or a phone in any notation",
        ),
    ] = "",
) -> Page[CustomerOut]:
    """Newest first; merged cards are left out (their survivors are listed)."""
    infos, next_cursor = await service.search_customers(session, q, paging)
    return Page[CustomerOut](items=[CustomerOut.of(i) for i in infos], next_cursor=next_cursor)


@router.get("/{customer_id}", response_model=CustomerDetailOut, summary="One customer")
async def get_customer(
    customer_id: uuid.UUID,
    session: ReadSession,
    _: Annotated[Principal, require(CUSTOMERS_READ)],
) -> CustomerDetailOut:
    """With every contact (and where it came from) and the latest 50 timeline entries."""
    return await _detail(session, customer_id)


@router.post("", response_model=CustomerDetailOut, status_code=201, summary="Create a card")
async def create(
    body: CustomerCreate,
    session: WriteSession,
    _: Annotated[Principal, require(CUSTOMERS_WRITE)],
    _idem: IdempotencyKey,
) -> CustomerDetailOut:
    """A contact that already belongs to a card is a 409 naming the field and, in
    `customer_id`, the card holding it."""
    info = await create_customer(
        session,
        kind=body.kind,
        name=body.name,
        phones=body.phones,
        emails=body.emails,
        external_ids=[(e.source, e.external_id) for e in body.external_ids],
        consent=body.consent,
        source=body.source,
    )
    return await _detail(session, info.id)


@router.patch("/{customer_id}", response_model=CustomerDetailOut, summary="Edit a card")
async def update(
    customer_id: uuid.UUID,
    body: CustomerUpdate,
    session: WriteSession,
    _: Annotated[Principal, require(CUSTOMERS_WRITE)],
) -> CustomerDetailOut:
    await update_customer(session, customer_id, body.model_dump(exclude_unset=True))
    return await _detail(session, customer_id)


@router.post(
    "/{customer_id}/merge", response_model=CustomerDetailOut, summary="Merge another card in"
)
async def merge_into(
    customer_id: uuid.UUID,
    body: MergeRequest,
    session: WriteSession,
    _: Annotated[Principal, require(CUSTOMERS_MERGE)],
) -> CustomerDetailOut:
    """`from_id` is merged into this card and points at it from then on."""
    await merge(session, customer_id, body.from_id)
    return await _detail(session, customer_id)


@router.post(
    "/{customer_id}/erase", response_model=CustomerDetailOut, summary="Erase personal data"
)
async def erase(
    customer_id: uuid.UUID,
    session: WriteSession,
    _: Annotated[Principal, require(CUSTOMERS_ERASE)],
) -> CustomerDetailOut:
    """Irreversible: names, contacts and free text are replaced, the audit trail pseudonymised;
    ids and the consent record stay."""
    await erase_customer(session, customer_id)
    return await _detail(session, customer_id)
