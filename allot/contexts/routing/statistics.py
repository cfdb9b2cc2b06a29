"""Read-only figures about routing for reports (the leads analytics page): what became of the
offers made for a period's items, which items went to more than one agent, and the agents' names
and teams a report groups by.

Every function reads; none writes, so they run on a read-only session. Each is one aggregate
query (GROUP BY in the database), whatever the number of items.

Scope shared by the functions below: the items of one `kind` created in `[created_from,
created_to)`, optionally only those whose attributes hold the given values (`{"source": ...}`),
and optionally only the agents in `agent_ids` (an empty collection selects nothing).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from .models import OFFER_STATUSES, Agent, Offer, WorkItem

# What an offer can end as. `reclaimed` is not an answer to an offer: it marks an item taken back
# from its owner after a missed first response (so it is never offered to them again).
OFFER_OUTCOMES = (*OFFER_STATUSES, "reclaimed")


@dataclass(frozen=True, slots=True)
class OfferCounts:
    """Offers made to one agent (`agent_id`) or to all of them (`agent_id` None), by outcome."""

    agent_id: uuid.UUID | None
    by_status: dict[str, int] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return self.by_status.get(status, 0)

    @property
    def offered(self) -> int:
        """Real offers (everything but the `reclaimed` marks)."""
        return sum(n for status, n in self.by_status.items() if status != "reclaimed")


@dataclass(frozen=True, slots=True)
class ItemCounts:
    """Items by how often they were handed to an agent (`times_routed`)."""

    items: int = 0
    never_assigned: int = 0  # still waiting or offered, or closed before anyone took them
    assigned_once: int = 0
    reassigned: int = 0  # assigned to two agents or more (declines do not count, reclaims do)


def _item_scope(
    kind: str,
    created_from: datetime,
    created_to: datetime,
    attributes: Mapping[str, str] | None,
) -> list[Any]:
    conditions: list[Any] = [
        WorkItem.kind == kind,
        WorkItem.created_at >= created_from,
        WorkItem.created_at < created_to,
    ]
    for name, value in (attributes or {}).items():
        conditions.append(WorkItem.attributes[name].as_string() == value)
    return conditions


async def offer_outcomes(
    session: AsyncSession,
    *,
    kind: str,
    created_from: datetime,
    created_to: datetime,
    attributes: Mapping[str, str] | None = None,
    agent_ids: Collection[uuid.UUID] | None = None,
) -> list[OfferCounts]:
    """The offers made for the scope's items (whenever they were made), per agent and outcome:
    `pending`, `accepted`, `declined`, `timed_out`, `rescinded` and `reclaimed` (see
    OFFER_OUTCOMES). One row per agent who had any, in no particular order."""
    conditions = _item_scope(kind, created_from, created_to, attributes)
    if agent_ids is not None:
        conditions.append(Offer.agent_id.in_(list(agent_ids)))
    statement = (
        select(Offer.agent_id, Offer.status, func.count())
        .select_from(Offer)
        .join(WorkItem, WorkItem.id == Offer.item_id)
        .where(*conditions)
        .group_by(Offer.agent_id, Offer.status)
    )
    per_agent: dict[uuid.UUID, dict[str, int]] = {}
    for agent_id, status, count in await session.execute(statement):
        per_agent.setdefault(agent_id, {})[status] = int(count)
    return [OfferCounts(agent_id, counts) for agent_id, counts in per_agent.items()]


async def item_outcomes(
    session: AsyncSession,
    *,
    kind: str,
    created_from: datetime,
    created_to: datetime,
    attributes: Mapping[str, str] | None = None,
    owner_ids: Collection[uuid.UUID] | None = None,
) -> ItemCounts:
    """The scope's items by the number of times they were assigned. `owner_ids` keeps the items
    whose current (or, once closed, last) owner is one of them."""
    conditions = _item_scope(kind, created_from, created_to, attributes)
    if owner_ids is not None:
        conditions.append(WorkItem.owner_agent_id.in_(list(owner_ids)))
    routed = WorkItem.times_routed
    statement = select(
        func.count(),
        func.count().filter(routed == 0),
        func.count().filter(routed == 1),
        func.count().filter(routed >= 2),
    ).where(*conditions)
    row = (await session.execute(statement)).one()
    return ItemCounts(*(int(value or 0) for value in row))


async def agent_names(
    session: AsyncSession, agent_ids: Collection[uuid.UUID | None]
) -> dict[uuid.UUID, str]:
    """The names of these agents, in one query (unknown ids are left out)."""
    wanted = [agent_id for agent_id in set(agent_ids) if agent_id is not None]
    if not wanted:
        return {}
    rows = await session.execute(select(Agent.id, Agent.name).where(Agent.id.in_(wanted)))
    return {agent_id: str(name) for agent_id, name in rows}


async def agents_in_team(session: AsyncSession, team: str) -> set[uuid.UUID]:
    """The agents whose `teams` attribute names `team` (active or not: a report on the past
    counts the people who did the work)."""
    return {agent_id for agent_id, teams in await _agent_teams(session) if team in teams}


async def team_names(session: AsyncSession) -> list[str]:
    """Every team some agent is in, sorted."""
    return sorted({team for _agent_id, teams in await _agent_teams(session) for team in teams})


async def _agent_teams(session: AsyncSession) -> list[tuple[uuid.UUID, list[str]]]:
    # Agents are people (tens, hundreds): their attributes are read whole and matched here, the
    # same on SQLite and PostgreSQL (no JSON array operators).
    rows = await session.execute(select(Agent.id, Agent.attributes))
    found: list[tuple[uuid.UUID, list[str]]] = []
    for agent_id, attributes in rows:
        teams = (attributes or {}).get("teams") or []
        found.append((agent_id, [str(team) for team in teams if isinstance(team, str | int)]))
    return found
