"""JSON API of the fair share per queue (`GET /api/v1/routing/fairness`); fairness.py computes
it, docs/routing-fairness.md explains it."""

from __future__ import annotations

import uuid

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

from allot.contexts.routing import ROUTING_READ
from allot.contexts.routing.fairness import MAX_WINDOW, fairness_reports
from allot.kernel.auth import Principal, require
from allot.kernel.errors import ValidationFailed
from allot.kernel.web.routers import api_router
from allot.kernel.web.uow import ReadSession

router = api_router("/routing/fairness", "routing fairness")


class AgentShareOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    agent_id: uuid.UUID
    name: str
    in_pool: bool = Field(
        description="A member of the queue who is active and not on leave (the pool); agents "
        "outside it who still have assignments in the window are listed without expectations"
    )
    weight: float | None = Field(description="The agent's fair-share weight (pool only)")
    assignments: int = Field(description="The agent's assignments in the window")
    share: float = Field(description="assignments / all assignments in the window (0 to 1)")
    expected: float | None = Field(description="weight / the pool's total weight")
    deviation: float | None = Field(
        description="share / expected - 1: 0 is exactly fair, -0.5 half the fair share; null "
        "outside the pool or while the window is empty"
    )


class QueueFairnessOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    queue_id: uuid.UUID
    queue_name: str
    window: int = Field(description="W: the last W assignments are counted (10 x pool, >= 10)")
    assignments: int = Field(description="Assignments in the window (fewer than W at first)")
    full: bool = Field(description="The window holds W assignments")
    pool_size: int
    max_abs_deviation: float | None = Field(description="The largest |deviation| in the pool")
    worst_agent_id: uuid.UUID | None = Field(description="Whose deviation that is")
    agents: list[AgentShareOut]


class FairnessOut(BaseModel):
    queues: list[QueueFairnessOut]


@router.get("", response_model=FairnessOut, summary="Each agent's share of a queue's work")
async def get_fairness(
    session: ReadSession,
    queue_id: uuid.UUID | None = Query(None, description="One queue; every active one if left out"),
    window: int | None = Query(
        None, ge=1, le=MAX_WINDOW, description="Count the last `window` assignments instead of W"
    ),
    principal: Principal = require(ROUTING_READ),
) -> FairnessOut:
    """Per queue, over its last W assignments (W = 10 x the pool size, at least 10): each
    agent's assignments and share against its expected share, weight / the total weight of the
    pool (members who are active and not on leave), and the deviation share / expected - 1.
    An assignment is a routing decision that gave the item to someone: a direct assignment, a
    backlog pass, an accepted offer (offers themselves are not counted)."""
    reports = await fairness_reports(
        session, [queue_id] if queue_id is not None else None, window=window
    )
    if queue_id is not None and not reports:
        raise ValidationFailed.on("query.queue_id", "No such queue", "unknown_queue")
    return FairnessOut(queues=[QueueFairnessOut.model_validate(r) for r in reports])
