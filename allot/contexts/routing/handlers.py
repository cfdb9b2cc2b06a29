"""Reactions to other contexts' events."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts.routing import agent_service
from allot.contexts.routing import live as _live  # noqa: F401 (registers routing.live_updates)
from allot.contexts.routing.models import Agent
from allot.contexts.routing.schemas import AgentUpdate
from allot.kernel.events import Event, subscribe


@subscribe("routing.on_user_deactivated", "identity.user.deactivated", "identity.user.deleted")
async def deactivate_agent_of_user(session: AsyncSession, event: Event) -> None:
    """A user who may no longer sign in takes no more work; its open work is reclaimed."""
    user_id = event.payload.get("user_id")
    if not user_id:
        return
    agent_id = await session.scalar(select(Agent.id).where(Agent.user_id == uuid.UUID(user_id)))
    if agent_id is not None:
        await agent_service.update_agent(session, agent_id, AgentUpdate(is_active=False))
