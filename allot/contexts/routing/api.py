"""JSON API: agents, queues and offers (`/api/v1/agents`, `/api/v1/queues`, `/api/v1/offers`)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from allot.contexts.routing import (
    ROUTING_MANAGE,
    ROUTING_READ,
    ROUTING_WORK,
    agent_service,
    queue_service,
    service,
)
from allot.contexts.routing.models import Agent, Offer, WorkItem
from allot.contexts.routing.schemas import (
    AgentCreate,
    AgentOut,
    AgentStatusChange,
    AgentUpdate,
    LeaveCreate,
    OfferOut,
    QueueCreate,
    QueueOut,
    QueueStats,
    QueueUpdate,
    WorkItemOut,
)
from allot.kernel.auth import CurrentPrincipal, Principal, require
from allot.kernel.errors import Forbidden, NotFound
from allot.kernel.idempotency import IdempotencyKey
from allot.kernel.pagination import Page, PageParams, page_params, paginate
from allot.kernel.web.routers import api_router
from allot.kernel.web.uow import ReadSession, WriteSession

router = APIRouter()
agents = api_router("/agents", "agents")
queues = api_router("/queues", "queues")
offers = api_router("/offers", "offers")
items = api_router("/work-items", "work items")
Pagination = Annotated[PageParams, Depends(page_params)]


async def _own_or_manager(session, principal: Principal, agent_id: uuid.UUID) -> Agent:  # type: ignore[no-untyped-def]
    agent = await agent_service.get_agent(session, agent_id)
    if principal.has(ROUTING_MANAGE) or agent.user_id == principal.user_id:
        return agent
    if principal.has(ROUTING_READ):
        raise Forbidden(detail="Only managers and the agent can change this agent")
    raise NotFound(detail="No such agent")


@agents.post("", status_code=201, response_model=AgentOut, summary="Create an agent")
async def create_agent(
    body: AgentCreate,
    session: WriteSession,
    _idem: IdempotencyKey,
    principal: Principal = require(ROUTING_MANAGE),
) -> Agent:
    """An agent is a user who takes work. With `email`, the agent is linked to that user (an
    operator account is opened if none exists). Members of queues are chosen by attributes."""
    return await agent_service.create_agent(session, body)


@agents.get("", response_model=list[AgentOut], summary="List agents")
async def list_agents(
    session: ReadSession, principal: Principal = require(ROUTING_READ)
) -> list[Agent]:
    return await agent_service.list_agents(session)


@agents.get("/{agent_id}", response_model=AgentOut, summary="An agent with status and load")
async def get_agent(
    agent_id: uuid.UUID, session: ReadSession, principal: CurrentPrincipal
) -> Agent:
    agent = await agent_service.get_agent(session, agent_id)
    if not (principal.has(ROUTING_READ) or agent.user_id == principal.user_id):
        raise NotFound(detail="No such agent")
    return agent


@agents.patch("/{agent_id}", response_model=AgentOut, summary="Change an agent")
async def update_agent(
    agent_id: uuid.UUID,
    body: AgentUpdate,
    session: WriteSession,
    principal: Principal = require(ROUTING_MANAGE),
) -> Agent:
    return await agent_service.update_agent(session, agent_id, body)


@agents.put("/{agent_id}/status", response_model=AgentOut, summary="Set availability")
async def set_status(
    agent_id: uuid.UUID,
    body: AgentStatusChange,
    session: WriteSession,
    principal: CurrentPrincipal,
) -> Agent:
    """`available` takes work now (waiting items are placed at once); `away` stops new work and
    hands pending offers on; `offline` also reclaims open work after the queue's grace."""
    await _own_or_manager(session, principal, agent_id)
    return await agent_service.set_status(session, agent_id, body.status)


@agents.post("/{agent_id}/heartbeat", response_model=AgentOut, summary="Presence heartbeat")
async def heartbeat(
    agent_id: uuid.UUID, session: WriteSession, principal: CurrentPrincipal
) -> Agent:
    await _own_or_manager(session, principal, agent_id)
    return await agent_service.heartbeat(session, agent_id)


@agents.post("/{agent_id}/leaves", status_code=201, summary="Record leave")
async def add_leave(
    agent_id: uuid.UUID,
    body: LeaveCreate,
    session: WriteSession,
    principal: Principal = require(ROUTING_MANAGE),
) -> dict[str, str]:
    leave = await agent_service.add_leave(session, agent_id, body)
    return {"id": str(leave.id)}


@queues.post("", status_code=201, response_model=QueueOut, summary="Create a queue")
async def create_queue(
    body: QueueCreate,
    session: WriteSession,
    _idem: IdempotencyKey,
    principal: Principal = require(ROUTING_MANAGE),
) -> object:
    return await queue_service.create_queue(session, body)


@queues.get("", response_model=list[QueueOut], summary="List queues")
async def list_queues(session: ReadSession, principal: Principal = require(ROUTING_READ)) -> object:
    return await queue_service.list_queues(session)


@queues.get("/stats", response_model=list[QueueStats], summary="Waiting, longest wait, members")
async def queue_stats(session: ReadSession, principal: Principal = require(ROUTING_READ)) -> object:
    return await queue_service.queue_stats(session)


@queues.patch("/{queue_id}", response_model=QueueOut, summary="Change a queue")
async def update_queue(
    queue_id: uuid.UUID,
    body: QueueUpdate,
    session: WriteSession,
    principal: Principal = require(ROUTING_MANAGE),
) -> object:
    return await queue_service.update_queue(session, queue_id, body)


@offers.get("", response_model=Page[OfferOut], summary="List offers")
async def list_offers(
    session: ReadSession,
    principal: CurrentPrincipal,
    page: Pagination,
    agent_id: Annotated[uuid.UUID | None, Query()] = None,
    status: Annotated[
        Literal["pending", "accepted", "declined", "timed_out", "rescinded"] | None, Query()
    ] = None,
) -> Page[OfferOut]:
    """Managers see every offer; an agent sees its own (the `agent_id` filter is then implied)."""
    stmt = select(Offer)
    if not principal.has(ROUTING_MANAGE):
        own = await agent_service.agent_for_user(session, principal.user_id)
        if own is None or (agent_id is not None and agent_id != own.id):
            return Page(items=[], next_cursor=None)
        agent_id = own.id
    if agent_id is not None:
        stmt = stmt.where(Offer.agent_id == agent_id)
    if status is not None:
        stmt = stmt.where(Offer.status == status)
    rows, cursor = await paginate(session, stmt, Offer.id, page)
    references = {
        row.id: (row.reference, row.kind)
        for row in await session.execute(
            select(WorkItem.id, WorkItem.reference, WorkItem.kind).where(
                WorkItem.id.in_({r.item_id for r in rows})
            )
        )
    }
    out = []
    for row in rows:
        data = OfferOut.model_validate(row)
        data.reference, data.kind = references.get(row.item_id, (None, None))
        out.append(data)
    return Page(items=out, next_cursor=cursor)


async def _offer_agent(session, principal: Principal, offer_id: uuid.UUID) -> uuid.UUID:  # type: ignore[no-untyped-def]
    offer = await service.get_offer(session, offer_id)
    own = await agent_service.agent_for_user(session, principal.user_id)
    if own is None or own.id != offer.agent_id:
        raise NotFound(detail="No such offer")  # other agents' offers are invisible, not forbidden
    return own.id


@offers.post("/{offer_id}/accept", response_model=WorkItemOut, summary="Accept an offer")
async def accept_offer(
    offer_id: uuid.UUID, session: WriteSession, principal: Principal = require(ROUTING_WORK)
) -> WorkItem:
    """First accept wins; a late accept is a 409 problem."""
    agent_id = await _offer_agent(session, principal, offer_id)
    return await service.accept_offer(session, offer_id, agent_id)


@offers.post("/{offer_id}/decline", status_code=204, summary="Decline an offer")
async def decline_offer(
    offer_id: uuid.UUID, session: WriteSession, principal: Principal = require(ROUTING_WORK)
) -> None:
    """The item goes to someone else and is never offered to this agent again."""
    agent_id = await _offer_agent(session, principal, offer_id)
    await service.decline_offer(session, offer_id, agent_id)


@items.get("/{item_id}", response_model=WorkItemOut, summary="A work item")
async def get_item(
    item_id: uuid.UUID, session: ReadSession, principal: Principal = require(ROUTING_READ)
) -> WorkItem:
    return await service.get_item(session, item_id)


from allot.contexts.routing.fairness_api import router as fairness  # noqa: E402
from allot.contexts.routing.rule_api import decisions, rule_sets  # noqa: E402

for sub in (agents, queues, offers, items, rule_sets, decisions, fairness):
    router.include_router(sub)
