"""Who belongs to which queue: agents matching the queue's member expression or in its teams.

Membership rows are materialised (and mirrored with the agent's load, see I4 in models.py) so
that choosing an agent is an ordered index lookup. They are recomputed when an agent's
attributes or a queue's membership rule change — rare, administrative events.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts.routing import expressions, mirror
from allot.contexts.routing import repository as repo
from allot.contexts.routing.decision import tie_draw
from allot.contexts.routing.models import EPOCH, Agent, Queue, QueueMember


def agent_facts(agent: Agent) -> dict[str, Any]:
    """What member expressions can test: the agent's attributes plus its name and email."""
    return {"name": agent.name, "email": agent.email, **(agent.attributes or {})}


def is_member(queue: Queue, agent: Agent) -> bool:
    """In the queue's teams or matching its expression; for a derived queue (rules' `require`)
    also matching its `require_expression`."""
    facts = agent_facts(agent)
    require = getattr(queue, "require_expression", "") or ""
    if require and not expressions.matches(require, facts):
        return False
    teams = set((agent.attributes or {}).get("teams") or [])
    if teams & set(queue.member_teams or []):
        return True
    return expressions.matches(queue.member_expression or "", facts)


# A membership's standing kept across a recomputation: (virtual_time, eligible). A new member
# starts ineligible at 0, so the mirror (mirror.sync_memberships) moves it up to where the
# queue's next member to be served started when it can take work; one that stays keeps its
# turns taken.
_Kept = dict[tuple[Any, Any], tuple[int, bool]]


async def _kept(session: AsyncSession, *where: Any) -> _Kept:
    rows = await session.execute(
        select(
            QueueMember.queue_id,
            QueueMember.agent_id,
            QueueMember.virtual_time,
            QueueMember.eligible,
        ).where(*where)
    )
    return {(r.queue_id, r.agent_id): (r.virtual_time, r.eligible) for r in rows}


async def _insert_member(session: AsyncSession, queue: Queue, agent: Agent, kept: _Kept) -> None:
    capped = bool(set(agent.capacity_by_kind or {}) & set(queue.work_kinds or []))
    draw = tie_draw(agent.id, agent.last_assigned_at or EPOCH, agent.load or 0)
    virtual_time, eligible = kept.get((queue.id, agent.id), (0, False))
    session.add(
        QueueMember(
            queue_id=queue.id, agent_id=agent.id, shuffle=draw, kind_capped=capped,
            virtual_time=virtual_time, eligible=eligible,
        )
    )  # fmt: skip


async def refresh_agent(session: AsyncSession, agent: Agent, moment: Any) -> None:
    """Recompute which queues the agent belongs to, then mirror its state into them."""
    kept = await _kept(session, QueueMember.agent_id == agent.id)
    await session.execute(delete(QueueMember).where(QueueMember.agent_id == agent.id))
    queues = (await session.execute(select(Queue).where(Queue.is_active.is_(True)))).scalars()
    for queue in queues:
        if is_member(queue, agent):
            await _insert_member(session, queue, agent, kept)
    await session.flush()
    state = await repo.load_agent_state(session, agent.id)
    await mirror.sync_memberships(session, state, moment.today, moment.month)


async def refresh_queue(session: AsyncSession, queue: Queue, moment: Any) -> int:
    """Recompute a queue's members from scratch; returns how many agents belong."""
    kept = await _kept(session, QueueMember.queue_id == queue.id)
    await repo.delete_memberships_of_queue(session, queue.id)
    if not queue.is_active:
        return 0
    agents = list((await session.execute(select(Agent))).scalars())
    members = [agent for agent in agents if is_member(queue, agent)]
    for agent in members:
        await _insert_member(session, queue, agent, kept)
    await session.flush()
    for agent in members:
        state = await repo.load_agent_state(session, agent.id)
        await mirror.sync_memberships(session, state, moment.today, moment.month)
    return len(members)
