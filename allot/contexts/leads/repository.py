"""All SQL of the leads context. The intake path is SQLAlchemy Core (one INSERT per lead, no ORM
unit of work); state changes are conditional UPDATEs whose row count says whether they happened."""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel.cache import ShortLivedCache
from allot.kernel.db.deferred import defer_insert
from allot.kernel.db.engine import dialect_insert, insert_ignoring_conflicts
from allot.kernel.pagination import PageParams, paginate

from .models import DEFAULT_SLA_SOURCE, Activity, Lead, LeadStatus, LeadTransition, SlaPolicy

LEADS_TABLE: Any = Lead.__table__


# -- intake -----------------------------------------------------------------------------------
# Every intake needs these and they change rarely: cached per process and source; a change made
# here forgets them on commit (pipeline.py), other processes see it within the cache's TTL.
INTAKE_SETTINGS_CACHE_SECONDS = 2.0
intake_settings_cache: ShortLivedCache[tuple[str | None, int | None]] = ShortLivedCache(
    "leads.intake_settings", INTAKE_SETTINGS_CACHE_SECONDS
)


async def intake_settings(session: AsyncSession, source: str) -> tuple[str | None, int | None]:
    """The pipeline's initial status and the source's first-response seconds, in one round trip
    (None for either when not configured)."""
    cached = intake_settings_cache.get(source)
    if cached is not None and cached[0] is not None:
        return cached
    initial = select(LeadStatus.key).where(LeadStatus.is_initial.is_(True)).limit(1)
    sla = (
        select(SlaPolicy.first_response_seconds)
        .where(SlaPolicy.source.in_((source, DEFAULT_SLA_SOURCE)))
        .order_by((SlaPolicy.source == DEFAULT_SLA_SOURCE).asc())  # the source's own row first
        .limit(1)
    )
    row = (await session.execute(select(initial.scalar_subquery(), sla.scalar_subquery()))).one()
    intake_settings_cache.put(source, (row[0], row[1]))
    return row[0], row[1]


async def insert_lead(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Insert a lead; False when (source, external_id) is taken (L1), without failing the
    transaction (a plain INSERT would abort it on PostgreSQL)."""
    result: Any = await session.execute(insert_ignoring_conflicts(session, LEADS_TABLE), values)
    return bool(result.rowcount == 1)


async def lead_id_by_external_id(
    session: AsyncSession, source: str, external_id: str
) -> uuid.UUID | None:
    return await session.scalar(
        select(Lead.id).where(Lead.source == source, Lead.external_id == external_id)
    )


async def lead_ids_by_external_ids(
    session: AsyncSession, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], uuid.UUID]:
    """The leads already holding any of these (source, external_id) pairs (L1), in one query."""
    wanted = set(pairs)
    if not wanted:
        return {}
    params = {
        "p_sources": list({source for source, _ in wanted}),
        "p_external_ids": list({external_id for _, external_id in wanted}),
    }
    found = await session.execute(_leads_by_external_ids_statement(), params)
    return {
        (row.source, row.external_id): row.id
        for row in found
        if (row.source, row.external_id) in wanted
    }


@functools.cache
def _leads_by_external_ids_statement() -> Any:
    return select(Lead.source, Lead.external_id, Lead.id).where(
        Lead.source.in_(bindparam("p_sources", expanding=True)),
        Lead.external_id.in_(bindparam("p_external_ids", expanding=True)),
    )


# -- reading and changing one lead ------------------------------------------------------------
async def get_lead(session: AsyncSession, lead_id: uuid.UUID) -> Lead | None:
    return await session.get(Lead, lead_id)


async def leads_by_ids(session: AsyncSession, lead_ids: Iterable[uuid.UUID]) -> list[Lead]:
    rows = await session.execute(select(Lead).where(Lead.id.in_(list(lead_ids))))
    return list(rows.scalars())


async def update_lead(
    session: AsyncSession, lead_id: uuid.UUID, *where: Any, **values: Any
) -> bool:
    """`UPDATE leads_leads SET ... WHERE id = :id AND <where>`; the loaded object (if any) gets the
    new values too. True when the row matched."""
    statement = update(Lead).where(Lead.id == lead_id, *where).values(**values)
    result: Any = await session.execute(statement)
    return bool(result.rowcount == 1)


async def lead_ids_of_customer(session: AsyncSession, customer_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await session.execute(
        select(Lead.id).where(Lead.customer_id == customer_id).order_by(Lead.id)
    )
    return list(rows.scalars())


async def repoint_customer(
    session: AsyncSession, from_id: uuid.UUID, into_id: uuid.UUID, now: datetime
) -> None:
    await session.execute(
        update(Lead)
        .where(Lead.customer_id == from_id)
        .values(customer_id=into_id, updated_at=now)
        .execution_options(synchronize_session=False)
    )


async def clear_search_text(session: AsyncSession, customer_id: uuid.UUID) -> None:
    await session.execute(
        update(Lead)
        .where(Lead.customer_id == customer_id)
        .values(search_text="")
        .execution_options(synchronize_session=False)
    )


# -- lists ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LeadFilter:
    status: str | None = None
    assignee_id: uuid.UUID | None = None
    unassigned: bool = False
    source: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    q: str | None = None
    visible_to_agent: uuid.UUID | None = None  # operators: only their agent's leads


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


_PHONE_LIKE = re.compile(r"^\+?[\d\s().-]+$")


def search_terms(q: str) -> list[str]:
    """Lower-cased words, all of which must match; a phone-like query is one term, its digits
    (a Russian trunk 8 read as +7, as phones are stored)."""
    text = q.strip().lower()
    if _PHONE_LIKE.match(text):
        digits = "".join(ch for ch in text if ch.isdigit())
        if len(digits) == 11 and digits.startswith("8"):
            digits = "7" + digits[1:]
        return [digits]
    return text.split()[:8]


async def list_leads(
    session: AsyncSession, filters: LeadFilter, page: PageParams
) -> tuple[Sequence[Lead], str | None]:
    statement = select(Lead)
    if filters.visible_to_agent is not None:
        statement = statement.where(Lead.assignee_id == filters.visible_to_agent)
    if filters.status:
        statement = statement.where(Lead.status == filters.status)
    if filters.assignee_id is not None:
        statement = statement.where(Lead.assignee_id == filters.assignee_id)
    if filters.unassigned:
        statement = statement.where(Lead.assignee_id.is_(None))
    if filters.source:
        statement = statement.where(Lead.source == filters.source)
    if filters.created_from is not None:
        statement = statement.where(Lead.created_at >= filters.created_from)
    if filters.created_to is not None:
        statement = statement.where(Lead.created_at < filters.created_to)
    for term in search_terms(filters.q or ""):
        statement = statement.where(Lead.search_text.like(f"%{_like_escaped(term)}%", escape="\\"))
    return await paginate(session, statement, Lead.id, page)


async def activities(
    session: AsyncSession, lead_id: uuid.UUID, page: PageParams
) -> tuple[Sequence[Activity], str | None]:
    return await paginate(
        session, select(Activity).where(Activity.lead_id == lead_id), Activity.id, page
    )


ACTIVITIES_TABLE: Any = Activity.__table__


def add(session: AsyncSession, *activities: Activity) -> None:
    """Timeline rows are append-only: deferred, written with one INSERT at commit."""
    add_values(
        session,
        [{c.key: getattr(row, c.key) for c in ACTIVITIES_TABLE.columns} for row in activities],
    )


def add_values(session: AsyncSession, rows: Iterable[dict[str, Any]]) -> None:
    """`add` for rows given as column values (`intake.activity_values`)."""
    for values in rows:
        defer_insert(session, ACTIVITIES_TABLE, values)


# -- the pipeline -----------------------------------------------------------------------------
async def statuses(session: AsyncSession) -> list[LeadStatus]:
    rows = await session.execute(select(LeadStatus).order_by(LeadStatus.position, LeadStatus.key))
    return list(rows.scalars())


async def transitions(session: AsyncSession) -> list[tuple[str, str]]:
    rows = await session.execute(
        select(LeadTransition.from_key, LeadTransition.to_key).order_by(
            LeadTransition.from_key, LeadTransition.to_key
        )
    )
    return [(row[0], row[1]) for row in rows]


async def transition_target(
    session: AsyncSession, from_key: str, to_key: str
) -> tuple[LeadStatus | None, bool]:
    """The target status and whether the transition from `from_key` to it is allowed."""
    allowed = (
        select(literal(1))
        .where(LeadTransition.from_key == from_key, LeadTransition.to_key == to_key)
        .exists()
    )
    row = (
        await session.execute(select(LeadStatus, allowed).where(LeadStatus.key == to_key))
    ).first()
    if row is None:
        return None, False
    return row[0], bool(row[1])


async def allowed_targets(session: AsyncSession, from_key: str) -> list[LeadStatus]:
    rows = await session.execute(
        select(LeadStatus)
        .join(LeadTransition, LeadTransition.to_key == LeadStatus.key)
        .where(LeadTransition.from_key == from_key)
        .order_by(LeadStatus.position, LeadStatus.key)
    )
    return list(rows.scalars())


async def statuses_in_use(session: AsyncSession) -> set[str]:
    rows = await session.execute(select(Lead.status).distinct())
    return set(rows.scalars())


async def seed_pipeline(
    session: AsyncSession, statuses: Iterable[dict[str, Any]], transitions: Iterable[dict[str, Any]]
) -> None:
    """Insert rows that are missing; concurrent seeders wait on the keys and then skip them."""
    insert = dialect_insert(session)
    await session.execute(insert(LeadStatus).values(list(statuses)).on_conflict_do_nothing())
    await session.execute(insert(LeadTransition).values(list(transitions)).on_conflict_do_nothing())


async def replace_pipeline(
    session: AsyncSession, statuses: list[dict[str, Any]], transitions: list[dict[str, Any]]
) -> None:
    await session.execute(delete(LeadTransition))
    await session.execute(delete(LeadStatus))
    await session.execute(dialect_insert(session)(LeadStatus).values(statuses))
    if transitions:
        await session.execute(dialect_insert(session)(LeadTransition).values(transitions))


# -- SLA policies -----------------------------------------------------------------------------
async def sla_policies(session: AsyncSession) -> list[SlaPolicy]:
    rows = await session.execute(select(SlaPolicy).order_by(SlaPolicy.source))
    return list(rows.scalars())


async def sla_policy(session: AsyncSession, source: str) -> SlaPolicy | None:
    return await session.get(SlaPolicy, source)


async def upsert_sla_policy(
    session: AsyncSession, source: str, seconds: int, now: datetime
) -> None:
    statement = dialect_insert(session)(SlaPolicy).values(
        source=source, first_response_seconds=seconds, updated_at=now
    )
    statement = statement.on_conflict_do_update(
        index_elements=[SlaPolicy.source],
        set_={"first_response_seconds": seconds, "updated_at": now},
    )
    await session.execute(statement)
