"""Who may see which lead: staff with `records:read_all` see every lead; everyone else (operators)
only the leads assigned to their own routing agent. A lead one may not see does not exist for
them (NotFound, never Forbidden: existence is not leaked)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts import routing
from allot.kernel.auth import RECORDS_READ_ALL, Principal
from allot.kernel.errors import NotFound

from . import repository as repo
from .models import Lead


@dataclass(frozen=True, slots=True)
class Viewer:
    sees_all: bool
    agent_id: uuid.UUID | None = None  # the caller's own agent, when they are one

    def can_see(self, lead: Lead) -> bool:
        return self.sees_all or (self.agent_id is not None and lead.assignee_id == self.agent_id)


SYSTEM = Viewer(sees_all=True)


async def viewer_for(
    session: AsyncSession, principal: Principal, *, acting: bool = False
) -> Viewer:
    """The caller's view. `acting`: they change a lead, so whether they are its assignee matters
    (a note by the assignee is the first response) even when they see everything."""
    sees_all = principal.has(RECORDS_READ_ALL)
    if sees_all and not acting:
        return SYSTEM
    agent = await routing.agent_for_user(session, principal.user_id)
    return Viewer(sees_all=sees_all, agent_id=agent.id if agent is not None else None)


async def visible_lead(session: AsyncSession, lead_id: uuid.UUID, viewer: Viewer) -> Lead:
    lead = await repo.get_lead(session, lead_id)
    if lead is None or not viewer.can_see(lead):
        raise NotFound(detail="No such lead")
    return lead
