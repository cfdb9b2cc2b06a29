"""Scenario helpers for routing tests: plain functions with sensible defaults."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy import func, select

from allot.contexts.routing import agent_service, queue_service, service
from allot.contexts.routing.models import Agent, AgentKindLoad, Offer, WorkItem
from allot.contexts.routing.schemas import AgentCreate, QueueCreate

_numbers = itertools.count(1)


async def make_queue(database, **fields: Any):
    body = QueueCreate(
        **{"name": f"Queue {next(_numbers)}", "member_expression": '"loans" in skills', **fields}
    )
    async with database.transaction() as session:
        return await queue_service.create_queue(session, body)


async def make_agent(database, **fields: Any):
    body = AgentCreate(
        **{
            "name": f"Agent {next(_numbers)}",
            "capacity": 2,
            "skills": ["loans"],
            "status": "available",
            **fields,
        }
    )
    async with database.transaction() as session:
        return await agent_service.create_agent(session, body)


async def submit(database, kind: str = "lead", **fields: Any):
    async with database.transaction() as session:
        return await service.submit(
            session,
            reference=fields.pop("reference", f"test:{next(_numbers)}"),
            kind=kind,
            **fields,
        )


async def set_status(database, agent_id, status: str):
    async with database.transaction() as session:
        return await agent_service.set_status(session, agent_id, status)


async def complete(database, reference: str):
    async with database.transaction() as session:
        return await service.complete(session, reference)


async def items(database) -> list[WorkItem]:
    async with database.reader() as session:
        return list(
            (
                await session.execute(select(WorkItem).order_by(WorkItem.created_at, WorkItem.id))
            ).scalars()
        )


async def agent(database, agent_id) -> Agent:
    async with database.reader() as session:
        return await session.get(Agent, agent_id)


async def offers(database, **where: Any) -> list[Offer]:
    async with database.reader() as session:
        stmt = select(Offer).order_by(Offer.created_at)
        for name, value in where.items():
            stmt = stmt.where(getattr(Offer, name) == value)
        return list((await session.execute(stmt)).scalars())


async def assert_invariants(database) -> None:
    """I1-I3 of routing/models.py, checked from the stored rows."""
    async with database.reader() as session:
        agents = list((await session.execute(select(Agent))).scalars())
        all_items = list((await session.execute(select(WorkItem))).scalars())
        pending = list(
            (await session.execute(select(Offer).where(Offer.status == "pending"))).scalars()
        )
        kind_loads = list((await session.execute(select(AgentKindLoad))).scalars())
    by_id = {a.id: a for a in agents}
    expected_load = {a.id: 0 for a in agents}
    for item in all_items:
        assert item.state in ("waiting", "offered", "assigned", "completed", "cancelled", "expired")
        if item.state == "assigned":
            assert item.owner_agent_id is not None, f"assigned item {item.id} has no owner"
            expected_load[item.owner_agent_id] += item.weight
        if item.state in ("waiting", "offered"):
            assert item.owner_agent_id is None
    items_by_id = {i.id: i for i in all_items}
    live = set()
    for offer in pending:
        assert items_by_id[offer.item_id].state == "offered", "pending offer on a non-offered item"
        assert (offer.item_id, offer.agent_id) not in live
        live.add((offer.item_id, offer.agent_id))
        expected_load[offer.agent_id] += offer.weight
        assert by_id[offer.agent_id].can_take_work, "pending offer held by an unavailable agent"
    for item in all_items:
        if item.state == "offered":
            assert any(o.item_id == item.id for o in pending), "offered item without a live offer"
    for a in agents:
        assert a.load == expected_load[a.id], f"{a.name}: load {a.load} != {expected_load[a.id]}"
        assert 0 <= a.load <= max(a.capacity, 0), f"{a.name}: load {a.load} > {a.capacity}"
    for row in kind_loads:
        assert 0 <= row.load <= row.capacity


async def count(database, model, *where) -> int:
    async with database.reader() as session:
        return await session.scalar(select(func.count()).select_from(model).where(*where))
