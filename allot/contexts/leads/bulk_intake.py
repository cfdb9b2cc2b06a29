"""Bulk intake (imports): many validated leads in one transaction and a constant number of
statements, with the same outcome per lead as `create_lead`.

For a batch, whatever its size:
1. one SELECT of the leads already holding the batch's (source, external_id) pairs: such a row
   is rejected ("duplicate external_id, existing lead <id>"), as is a later row of the batch
   repeating an earlier one's pair (L1);
2. the intake settings (initial status, SLA) once per source of the batch;
3. `customers.intake_many` per source: the customer cards, deduplicated by phone and e-mail
   against the stored cards and within the batch;
4. `routing.submit_many`: the work items, waiting in their queue, then placed with the agents
   who have room by the routing engine itself;
5. executemany INSERTs of the leads (assignee as routing placed them, L3), their "created" and
   "assigned" timeline rows, the outbox events `create_lead` writes (`leads.lead.created` per
   lead, `leads.lead.assigned` per lead placed at once) and ONE audit entry for the batch
   (`leads.import.batch`: the import, its line range and the counts) instead of one per lead.

Never half a row: everything runs in the caller's transaction, and a lead row whose (source,
external_id) was taken by a concurrent writer since step 1 fails its INSERT, which aborts the
whole batch (nothing of it stays); the caller runs the batch again and step 1 then rejects it.
Callers validate every row first with `validate_new_lead` and pass only the valid ones.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts import audit, customers, routing
from allot.kernel.clock import utcnow
from allot.kernel.context import current_actor
from allot.kernel.db.bulk_insert import insert_rows
from allot.kernel.db.engine import Database
from allot.kernel.events.outbox import NewEvent, publish_many
from allot.kernel.ids import new_id, new_ids

from . import events
from . import repository as repo
from .intake import LEAD_KIND, NewLead, lead_row, routing_attributes
from .models import DEFAULT_FIRST_RESPONSE_SECONDS, Activity, Lead
from .pipeline import DEFAULT_PIPELINE, ensure_seeded

LEADS: Table = Lead.__table__  # type: ignore[assignment]
ACTIVITIES: Table = Activity.__table__  # type: ignore[assignment]

# PostgreSQL plans the per-batch lookups (existing leads, contact owners) from table statistics.
# A bulk load outruns autovacuum's ANALYZE, and with statistics of a table a tenth of its size
# the planner scans every lead of the source instead of probing the unique index: each batch
# then costs more than the last. Loaders refresh them every ANALYZE_EVERY_ROWS rows.
ANALYZE_EVERY_ROWS = 20_000
GROWN_TABLES = (
    "leads_leads", "leads_activities", "customers_customers", "customers_contacts",
    "customers_external_ids", "routing_work_items",
)  # fmt: skip

BATCH_ACTION = "leads.import.batch"
IMPORT_OBJECT = "leads.import"
DUPLICATE_REASON = "duplicate external_id, existing lead {lead_id}"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A row not taken in: its position in the batch, the field at fault and why."""

    index: int
    field: str
    reason: str
    code: str = "invalid"
    existing_id: uuid.UUID | None = None  # the lead a duplicate repeats


@dataclass(slots=True)
class BulkResult:
    lead_ids: dict[int, uuid.UUID] = field(default_factory=dict)  # batch position -> new lead
    rejected: list[Rejected] = field(default_factory=list)
    assigned: int = 0
    offered: int = 0
    waiting: int = 0
    customers_created: int = 0
    customers_updated: int = 0

    @property
    def imported(self) -> int:
        return len(self.lead_ids)


@dataclass(frozen=True, slots=True)
class _Accepted:
    index: int
    new: NewLead
    lead_id: uuid.UUID


async def _existing_leads(
    session: AsyncSession, rows: Sequence[NewLead]
) -> dict[tuple[str, str], uuid.UUID]:
    pairs = {(r.source, r.external_id) for r in rows if r.external_id is not None}
    if not pairs:
        return {}
    statement = select(LEADS.c.source, LEADS.c.external_id, LEADS.c.id).where(
        LEADS.c.source.in_({s for s, _ in pairs}),
        LEADS.c.external_id.in_({e for _, e in pairs}),
    )
    found = await session.execute(statement)
    return {(r.source, r.external_id): r.id for r in found if (r.source, r.external_id) in pairs}


def _dedup(
    rows: Sequence[NewLead], existing: dict[tuple[str, str], uuid.UUID], result: BulkResult
) -> list[_Accepted]:
    accepted: list[_Accepted] = []
    taken = dict(existing)
    for index, (new, lead_id) in enumerate(zip(rows, new_ids(len(rows)), strict=True)):
        if new.external_id is not None:
            key = (new.source, new.external_id)
            holder = taken.get(key)
            if holder is not None:
                result.rejected.append(
                    Rejected(
                        index,
                        "external_id",
                        DUPLICATE_REASON.format(lead_id=holder),
                        "duplicate",
                        holder,
                    )
                )
                continue
            taken[key] = lead_id
        accepted.append(_Accepted(index, new, lead_id))
    return accepted


async def _settings(
    session: AsyncSession, sources: set[str], now: datetime
) -> dict[str, tuple[str, datetime]]:
    """Initial status and first-response due time per source, as `create_lead` finds them."""
    found: dict[str, tuple[str, datetime]] = {}
    for source in sorted(sources):
        initial, sla_seconds = await repo.intake_settings(session, source)
        if initial is None:
            await ensure_seeded(session)
            initial = DEFAULT_PIPELINE.initial.key
        due = now + timedelta(seconds=sla_seconds or DEFAULT_FIRST_RESPONSE_SECONDS)
        found[source] = (initial, due)
    return found


async def _customers(
    session: AsyncSession, accepted: list[_Accepted], result: BulkResult
) -> list[uuid.UUID]:
    by_source: dict[str, list[int]] = {}
    for position, row in enumerate(accepted):
        by_source.setdefault(row.new.source, []).append(position)
    ids: list[uuid.UUID | None] = [None] * len(accepted)
    for source, positions in by_source.items():
        people = [
            customers.Person(
                name=accepted[p].new.customer_name,
                phone=accepted[p].new.customer_phone,
                email=accepted[p].new.customer_email,
            )
            for p in positions
        ]
        taken = await customers.intake_many(session, source, people)
        result.customers_created += taken.created
        result.customers_updated += taken.updated
        for position, customer_id in zip(positions, taken.customer_ids, strict=True):
            ids[position] = customer_id
    return [i for i in ids if i is not None]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


class StatisticsKeeper:
    """Counts rows a bulk load wrote and refreshes PostgreSQL's statistics every
    ANALYZE_EVERY_ROWS of them (see above); nothing to do on SQLite."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.since_analyze = 0

    async def wrote(self, rows: int) -> None:
        self.since_analyze += rows
        if self.database.is_sqlite or self.since_analyze < ANALYZE_EVERY_ROWS:
            return
        self.since_analyze = 0
        async with self.database.transaction() as session:
            await session.execute(text("ANALYZE " + ", ".join(GROWN_TABLES)))


async def create_leads_bulk(
    session: AsyncSession,
    rows: Sequence[NewLead],
    *,
    import_id: uuid.UUID | None = None,
    audit_facts: Mapping[str, Any] | None = None,
) -> BulkResult:
    """Take in validated leads (see the module docstring) in the caller's transaction. Returns
    the new lead per accepted row and the rejected rows (duplicates), by position in `rows`."""
    result = BulkResult()
    if not rows:
        return result
    now = utcnow()
    accepted = _dedup(rows, await _existing_leads(session, rows), result)
    if accepted:
        await _take_in(session, accepted, now, result)
    await audit.record(
        session,
        action=BATCH_ACTION,
        object_type=IMPORT_OBJECT,
        object_id=import_id or new_id(),
        after={
            **(audit_facts or {}),
            "rows": len(rows),
            "imported": result.imported,
            "rejected": len(result.rejected),
            "assigned": result.assigned,
            "offered": result.offered,
            "waiting": result.waiting,
            "customers_created": result.customers_created,
            "customers_updated": result.customers_updated,
        },
        summary=f"{result.imported} leads imported, {len(result.rejected)} rejected",
    )
    return result


async def _take_in(
    session: AsyncSession, accepted: list[_Accepted], now: datetime, result: BulkResult
) -> None:
    settings = await _settings(session, {row.new.source for row in accepted}, now)
    due_text = {source: _iso(due) for source, (_, due) in settings.items()}
    customer_ids = await _customers(session, accepted, result)
    # Each id as text once: the item's reference, the payloads and the events' aggregate ids.
    lead_texts = [str(row.lead_id) for row in accepted]
    routed = await routing.submit_many(
        session,
        [
            routing.NewItem(
                reference=f"lead:{lead_text}",
                kind=LEAD_KIND,
                attributes=routing_attributes(row.new),
                priority=row.new.priority,
                weight=1,
                first_response_due_at=settings[row.new.source][1],
            )
            for row, lead_text in zip(accepted, lead_texts, strict=True)
        ],
    )
    actor = current_actor()
    by_actor = {
        "actor_kind": actor.kind,
        "actor_id": actor.id,
        "actor_label": actor.label[:255],
        "created_at": now,
        "from_status": None,
        "body": None,
    }
    leads: list[dict[str, Any]] = []
    activities: list[dict[str, Any]] = []
    published: list[NewEvent] = []
    for row, lead_text, customer_id, placed in zip(
        accepted, lead_texts, customer_ids, routed, strict=True
    ):
        status, due = settings[row.new.source]
        agent_id = placed.agent_id if placed.state == "assigned" else None
        values = lead_row(row.lead_id, row.new, customer_id, status, agent_id, due, now)
        leads.append(values)
        result.lead_ids[row.index] = row.lead_id
        if placed.state == "assigned":
            result.assigned += 1
        elif placed.state == "offered":
            result.offered += 1
        else:
            result.waiting += 1
        customer_text = str(customer_id)
        ids = {"lead_id": lead_text, "customer_id": customer_text}
        activities.append(
            {
                **by_actor,
                "id": None,  # below, all at once
                "lead_id": row.lead_id,
                "kind": "created",
                "to_status": status,
                "agent_id": None,
                "reason": None,
            }
        )
        published.append(
            NewEvent(
                type=events.LEAD_CREATED,
                aggregate_type=events.AGGREGATE,
                aggregate_id=lead_text,
                payload={
                    **ids,
                    "source": values["source"],
                    "external_id": values["external_id"],
                    "status": status,
                    "priority": values["priority"],
                    "assignee_id": str(agent_id) if agent_id else None,
                    "amount_minor": values["amount_minor"],
                    "currency": values["currency"],
                    "term_months": values["term_months"],
                    "first_response_due_at": due_text[row.new.source],
                },
                partition_key=customer_text,  # stored as str(): the text made once above
            )
        )
        if agent_id is not None:
            activities.append(
                {
                    **by_actor,
                    "id": None,
                    "lead_id": row.lead_id,
                    "kind": "assigned",
                    "to_status": None,
                    "agent_id": agent_id,
                    "reason": "direct",
                }
            )
            published.append(
                NewEvent(
                    type=events.LEAD_ASSIGNED,
                    aggregate_type=events.AGGREGATE,
                    aggregate_id=lead_text,
                    payload={
                        **ids,
                        "agent_id": str(agent_id),
                        "previous_agent_id": None,
                        "at_intake": True,
                    },
                    partition_key=customer_text,  # stored as str(): the text made once above
                )
            )
    for activity, activity_id in zip(activities, new_ids(len(activities)), strict=True):
        activity["id"] = activity_id
    # A pair taken by a concurrent writer since `_existing_leads` fails here (L1) and aborts the
    # batch as a whole; the caller runs it again.
    await insert_rows(session, LEADS, leads)
    await insert_rows(session, ACTIVITIES, activities)
    await publish_many(session, published)
