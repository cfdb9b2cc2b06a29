"""Leads from concurrent API requests taken in together: one transaction for all of them.

`POST /api/v1/leads` without `Idempotency-Key` hands its (validated) lead to `take_in`, which
waits for the lead to be committed by a shared unit of work (kernel/db/group_commit.py): under
load the requests of one moment are taken in as one batch, alone a request is a batch of one.

Each lead of a batch ends exactly as `intake.create_lead` would leave it, taken in one after
another in arrival order (the tests compare the two):
- a (source, external_id) already stored, or repeated by an earlier lead of the batch, is that
  request's 409 with `existing_id`; the others go on (L1);
- its customer card, found or made by `customers.intake_many` (set-based, the same card
  `customers.intake` would give; a new card's events recorded as its request's);
- its work item placed by `routing.submit_many` (the engine's rules, set-based);
- the lead rows in one executemany INSERT (`bulk_insert.insert_rows`); per lead its timeline
  rows, audit entry and events (`intake.record_intake`), recorded under its own request's actor
  and ids.
A batch that fails as a whole (another process took one of its external ids in between, say)
leaves nothing behind, and each of its leads is taken again by `create_lead` on its own.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts import customers, routing
from allot.kernel.clock import utcnow
from allot.kernel.db.bulk_insert import insert_rows
from allot.kernel.db.engine import Database
from allot.kernel.db.group_commit import GroupCommit, Row
from allot.kernel.errors import Conflict
from allot.kernel.ids import new_id

from . import repository as repo
from .intake import (
    DUPLICATE,
    LEAD_KIND,
    NewLead,
    create_lead,
    lead_row,
    record_intake,
    routing_attributes,
    status_and_due,
    stored_lead,
)
from .models import Lead

LEADS: Table = Lead.__table__  # type: ignore[assignment]
MAX_BATCH = 256

_batchers: weakref.WeakKeyDictionary[Database, GroupCommit[NewLead, Lead]] = (
    weakref.WeakKeyDictionary()
)


async def take_in(database: Database, new: NewLead) -> Lead:
    """Take a validated lead in and route it; returns the lead once committed. Raises Conflict
    (with `existing_id`) for a taken (source, external_id), as `create_lead` does."""
    return await batcher(database).submit(new)


def batcher(database: Database) -> GroupCommit[NewLead, Lead]:
    found = _batchers.get(database)
    if found is None:
        found = GroupCommit(
            "leads.intake",
            database,
            run_batch=_take_in_batch,
            run_one=_take_in_one,
            max_batch=MAX_BATCH,
        )
        _batchers[database] = found
    return found


async def _take_in_one(session: AsyncSession, new: NewLead) -> Lead:
    return await create_lead(session, new, validated=True)


async def _take_in_batch(
    session: AsyncSession, rows: Sequence[Row[NewLead]]
) -> list[Lead | Exception]:
    now = utcnow()
    outcomes: list[Lead | Exception | None] = [None] * len(rows)
    lead_ids = await _refuse_duplicates(session, rows, outcomes)
    taken = [i for i, outcome in enumerate(outcomes) if outcome is None]
    if not taken:
        return [outcome for outcome in outcomes if outcome is not None]

    settings: dict[str, tuple[str, datetime]] = {}
    for source in {rows[i].value.source for i in taken}:
        settings[source] = await status_and_due(session, source, now)
    customer_ids: dict[int, uuid.UUID] = {}
    for source in settings:
        of_source = [i for i in taken if rows[i].value.source == source]
        people = [
            customers.Person(
                name=rows[i].value.customer_name,
                phone=rows[i].value.customer_phone,
                email=rows[i].value.customer_email,
            )
            for i in of_source
        ]
        callers = [rows[i].caller for i in of_source]
        cards = await customers.intake_many(session, source, people, callers=callers)
        customer_ids.update(zip(of_source, cards.customer_ids, strict=True))
    placed = await routing.submit_many(
        session,
        [
            routing.NewItem(
                reference=f"lead:{lead_ids[i]}",
                kind=LEAD_KIND,
                attributes=routing_attributes(rows[i].value),
                priority=rows[i].value.priority,
                weight=1,
                first_response_due_at=settings[rows[i].value.source][1],
            )
            for i in taken
        ],
        callers=[rows[i].caller for i in taken],
    )
    values = [
        lead_row(
            lead_ids[i],
            rows[i].value,
            customer_ids[i],
            settings[rows[i].value.source][0],
            result.agent_id,
            settings[rows[i].value.source][1],
            now,
        )
        for i, result in zip(taken, placed, strict=True)
    ]
    # A pair taken since `_refuse_duplicates` read (another process) fails this INSERT and with
    # it the batch; the group commit then takes each lead alone, and that one gets its 409.
    await insert_rows(session, LEADS, values)
    for i, row in zip(taken, values, strict=True):
        lead = stored_lead(row)
        with rows[i].caller.applied():
            await record_intake(session, lead, now)
        outcomes[i] = lead
    return [outcome for outcome in outcomes if outcome is not None]


async def _refuse_duplicates(
    session: AsyncSession, rows: Sequence[Row[NewLead]], outcomes: list[Lead | Exception | None]
) -> dict[int, uuid.UUID]:
    """L1 for the batch: a lead repeating a stored pair or an earlier lead's pair is refused
    (its outcome set to the Conflict); returns the new lead id of every other row."""
    pairs = [(r.value.source, r.value.external_id) for r in rows if r.value.external_id]
    holders = await repo.lead_ids_by_external_ids(session, pairs)
    lead_ids: dict[int, uuid.UUID] = {}
    for i, row in enumerate(rows):
        source, external_id = row.value.source, row.value.external_id
        if external_id is not None and (source, external_id) in holders:
            existing = holders[(source, external_id)]
            outcomes[i] = Conflict(detail=DUPLICATE, extra={"existing_id": str(existing)})
            continue
        lead_ids[i] = new_id()
        if external_id is not None:
            holders[(source, external_id)] = lead_ids[i]
    return lead_ids
