"""Routing admin pages (`routing:manage`): queues and agents, listed, created and edited.

The forms are read into the JSON API's request models and saved by the same service functions,
so pages and API validate alike and are audited alike. A failed save shows the form again with
what was typed and a message at each wrong input.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from allot.contexts.routing import ROUTING_MANAGE, agent_service, queue_service
from allot.contexts.routing.forms import (
    MODE_LABELS,
    STATUS_LABELS,
    STRATEGY_LABELS,
    FormInvalid,
    choices,
    json_object,
    optional,
    pydantic_errors,
    service_errors,
    text,
    word_list,
)
from allot.contexts.routing.models import AGENT_STATUSES, Agent, Queue
from allot.contexts.routing.schemas import AgentCreate, AgentUpdate, QueueCreate, QueueUpdate
from allot.kernel.auth import Principal, require
from allot.kernel.errors import Conflict, ValidationFailed
from allot.kernel.web.routers import view_router
from allot.kernel.web.templating import render
from allot.kernel.web.uow import ReadSession, WriteSession

router = view_router("/routing")
Manager = Annotated[Principal, require(ROUTING_MANAGE)]
SaveErrors = (ValidationError, FormInvalid, ValidationFailed, Conflict)

QUEUE_NUMBERS = ("offer_timeout_seconds", "broadcast_size", "reclaim_grace_seconds", "priority")
QUEUE_OPTIONAL_NUMBERS = ("auto_away_after_misses", "first_response_seconds")
QUEUE_FIELDS = (
    "name", "work_kinds", "member_expression", "member_teams", "strategy", "scorer",
    "offer_mode", *QUEUE_NUMBERS, *QUEUE_OPTIONAL_NUMBERS,
)  # fmt: skip
AGENT_LISTS = ("skills", "languages", "regions", "teams")
AGENT_FIELDS = (
    "name", "email", "capacity", *AGENT_LISTS, "weight", "schedule", "daily_quota",
    "monthly_quota", "status",
)  # fmt: skip


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _errors_of(exc: Exception) -> dict[str, str]:
    if isinstance(exc, ValidationError):
        return pydantic_errors(exc)
    if isinstance(exc, FormInvalid):
        return exc.errors
    assert isinstance(exc, ValidationFailed | Conflict)
    return service_errors(exc)


def _status_of(exc: Exception) -> int:
    return 409 if isinstance(exc, Conflict) else 422


# -- queues -----------------------------------------------------------------------------------
def queue_values(queue: Queue) -> dict[str, str]:
    def shown(value: Any) -> str:
        return "" if value is None else str(value)

    return {
        "name": queue.name,
        "work_kinds": ", ".join(queue.work_kinds or []),
        "member_expression": queue.member_expression,
        "member_teams": ", ".join(queue.member_teams or []),
        "strategy": queue.strategy,
        "scorer": shown(queue.scorer),
        "offer_mode": queue.offer_mode,
        **{name: shown(getattr(queue, name)) for name in QUEUE_NUMBERS + QUEUE_OPTIONAL_NUMBERS},
        "is_active": "on" if queue.is_active else "",
    }


def queue_body(values: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": values["name"],
        "work_kinds": word_list(values["work_kinds"]),
        "member_expression": values["member_expression"],
        "member_teams": word_list(values["member_teams"]),
        "strategy": values["strategy"],
        "scorer": optional(values["scorer"]),
        "offer_mode": values["offer_mode"],
    }
    body.update({name: values[name] for name in QUEUE_NUMBERS if values[name]})
    body.update({name: optional(values[name]) for name in QUEUE_OPTIONAL_NUMBERS})
    return body


async def _queue_form(
    request: Request,
    queue: Queue | None,
    values: dict[str, str],
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    context = {
        "queue": queue,
        "values": values,
        "errors": errors or {},
        "strategies": choices(STRATEGY_LABELS),
        "modes": choices(MODE_LABELS),
    }
    return render(
        request, "routing/queue_form.html", context, block="content", status_code=status_code
    )


@router.get("/queues")
async def queues_page(request: Request, session: ReadSession, _manager: Manager) -> Response:
    context = {
        "queues": await queue_service.list_queues(session),
        "strategy_labels": dict(choices(STRATEGY_LABELS)),
        "mode_labels": dict(choices(MODE_LABELS)),
        "saved": request.query_params.get("saved") == "1",
    }
    return render(request, "routing/queues.html", context, block="content")


@router.get("/queues/new")
async def new_queue_page(request: Request, _manager: Manager) -> Response:
    defaults = QueueCreate(name="x")
    values = dict.fromkeys(QUEUE_FIELDS, "")
    values.update({name: str(getattr(defaults, name)) for name in QUEUE_NUMBERS})
    values.update(strategy=defaults.strategy, offer_mode=defaults.offer_mode, work_kinds="lead")
    return await _queue_form(request, None, values)


@router.post("/queues")
async def create_queue(request: Request, session: WriteSession, _manager: Manager) -> Response:
    form = await request.form()
    values = {name: text(form, name) for name in QUEUE_FIELDS}
    try:
        await queue_service.create_queue(session, QueueCreate.model_validate(queue_body(values)))
    except SaveErrors as exc:
        await session.rollback()
        return await _queue_form(request, None, values, _errors_of(exc), _status_of(exc))
    return _see_other("/routing/queues?saved=1")


@router.get("/queues/{queue_id}")
async def edit_queue_page(
    request: Request, queue_id: uuid.UUID, session: ReadSession, _manager: Manager
) -> Response:
    queue = await queue_service.get_queue(session, queue_id)
    return await _queue_form(request, queue, queue_values(queue))


@router.post("/queues/{queue_id}")
async def update_queue(
    request: Request, queue_id: uuid.UUID, session: WriteSession, _manager: Manager
) -> Response:
    form = await request.form()
    values = {name: text(form, name) for name in QUEUE_FIELDS}
    values["is_active"] = "on" if text(form, "is_active") else ""
    try:
        body = QueueUpdate.model_validate(
            {**queue_body(values), "is_active": bool(values["is_active"])}
        )
        await queue_service.update_queue(session, queue_id, body)
    except SaveErrors as exc:
        await session.rollback()
        queue = await queue_service.get_queue(session, queue_id)
        return await _queue_form(request, queue, values, _errors_of(exc), _status_of(exc))
    return _see_other("/routing/queues?saved=1")


# -- agents -----------------------------------------------------------------------------------
def agent_values(agent: Agent) -> dict[str, str]:
    attributes = agent.attributes or {}
    return {
        "name": agent.name,
        "email": agent.email or "",
        "capacity": str(agent.capacity),
        **{name: ", ".join(attributes.get(name) or []) for name in AGENT_LISTS},
        "weight": str(agent.weight),
        "schedule": json.dumps(agent.schedule, ensure_ascii=False, indent=2)
        if agent.schedule
        else "",
        "daily_quota": "" if agent.daily_quota is None else str(agent.daily_quota),
        "monthly_quota": "" if agent.monthly_quota is None else str(agent.monthly_quota),
        "status": agent.status,
        "is_active": "on" if agent.is_active else "",
    }


def agent_body(values: dict[str, str], *, creating: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": values["name"],
        **{name: word_list(values[name]) for name in AGENT_LISTS},
        "schedule": json_object(values["schedule"], "schedule"),
        "daily_quota": optional(values["daily_quota"]),
        "monthly_quota": optional(values["monthly_quota"]),
    }
    body.update({name: values[name] for name in ("capacity", "weight") if values[name]})
    if creating:
        body.update(email=optional(values["email"]), status=values["status"] or "offline")
    return body


async def _agent_form(
    request: Request,
    agent: Agent | None,
    values: dict[str, str],
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    context = {
        "agent": agent,
        "values": values,
        "errors": errors or {},
        "statuses": choices(STATUS_LABELS),
    }
    return render(
        request, "routing/agent_form.html", context, block="content", status_code=status_code
    )


@router.get("/agents")
async def agents_page(request: Request, session: ReadSession, _manager: Manager) -> Response:
    context = {
        "agents": await agent_service.list_agents(session),
        "statuses": choices(STATUS_LABELS),
        "saved": request.query_params.get("saved") == "1",
    }
    return render(request, "routing/agents.html", context, block="content")


@router.get("/agents/new")
async def new_agent_page(request: Request, _manager: Manager) -> Response:
    values = dict.fromkeys(AGENT_FIELDS, "")
    values.update(capacity="5", weight="1.0", status="offline")
    return await _agent_form(request, None, values)


@router.post("/agents")
async def create_agent(request: Request, session: WriteSession, _manager: Manager) -> Response:
    form = await request.form()
    values = {name: text(form, name) for name in AGENT_FIELDS}
    try:
        body = AgentCreate.model_validate(agent_body(values, creating=True))
        await agent_service.create_agent(session, body)
    except SaveErrors as exc:
        await session.rollback()
        return await _agent_form(request, None, values, _errors_of(exc), _status_of(exc))
    return _see_other("/routing/agents?saved=1")


@router.get("/agents/{agent_id}")
async def edit_agent_page(
    request: Request, agent_id: uuid.UUID, session: ReadSession, _manager: Manager
) -> Response:
    agent = await agent_service.get_agent(session, agent_id)
    return await _agent_form(request, agent, agent_values(agent))


@router.post("/agents/{agent_id}")
async def update_agent(
    request: Request, agent_id: uuid.UUID, session: WriteSession, _manager: Manager
) -> Response:
    form = await request.form()
    values = {name: text(form, name) for name in AGENT_FIELDS}
    values["is_active"] = "on" if text(form, "is_active") else ""
    # An input sent empty clears its field (a quota: none); one not sent at all keeps it.
    changes = {k: v for k, v in agent_body(values, creating=False).items() if k in form}
    try:
        body = AgentUpdate.model_validate({**changes, "is_active": bool(values["is_active"])})
        await agent_service.update_agent(session, agent_id, body)
    except SaveErrors as exc:
        await session.rollback()
        agent = await agent_service.get_agent(session, agent_id)
        values["email"] = agent.email or ""
        return await _agent_form(request, agent, values, _errors_of(exc), _status_of(exc))
    return _see_other("/routing/agents?saved=1")


@router.post("/agents/{agent_id}/status")
async def set_agent_status(
    request: Request, agent_id: uuid.UUID, session: WriteSession, _manager: Manager
) -> Response:
    status = text(await request.form(), "status")
    if status not in AGENT_STATUSES:
        raise ValidationFailed.on("body.status", "Choose available, away or offline")
    await agent_service.set_status(session, agent_id, status)
    return _see_other("/routing/agents")
