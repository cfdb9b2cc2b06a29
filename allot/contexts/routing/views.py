"""Routing pages: the agent's inbox and the managers' board, both live over server-sent events.

Each page has a "panel" block that htmx re-fetches when the page's event stream says something
changed (routing/live.py publishes those messages after commit). Streams read the database once,
before streaming, and never hold a session while they wait. Admin pages are in admin_views.py.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

from babel.dates import format_timedelta
from babel.numbers import format_percent
from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import RedirectResponse, Response

from allot.contexts.routing import (
    ROUTING_READ,
    ROUTING_WORK,
    agent_service,
    fairness,
    queue_service,
    service,
)
from allot.contexts.routing.forms import (
    MODE_LABELS,
    STATUS_LABELS,
    STRATEGY_LABELS,
    choices,
    text,
)
from allot.contexts.routing.live import BOARD_TOPIC, agent_topic
from allot.contexts.routing.models import AGENT_STATUSES, Agent
from allot.contexts.routing.references import ReferenceSummary, describe_references
from allot.kernel.auth import Principal, require
from allot.kernel.clock import utcnow
from allot.kernel.errors import Conflict, NotFound, ValidationFailed
from allot.kernel.i18n import gettext as _
from allot.kernel.i18n import locale_var
from allot.kernel.web.live import get_hub, sse_response
from allot.kernel.web.routers import view_router
from allot.kernel.web.templating import is_htmx, render
from allot.kernel.web.uow import ReadSession, WriteSession

from . import admin_views, rule_views, simulate_views

router = view_router()
Worker = Annotated[Principal, require(ROUTING_WORK)]
Reader = Annotated[Principal, require(ROUTING_READ)]

BOARD_REFRESH_SECONDS = 1.0  # a burst of assignments re-renders a board at most once a second
INBOX_REFRESH_SECONDS = 0.2


def seconds_between(start: datetime | None, end: datetime) -> int:
    return max(int((end - start).total_seconds()), 0) if start else 0


def clock_text(seconds: float | None) -> str:
    """1:05 or 2:03:04: the same shape routing.js keeps ticking."""
    if seconds is None:
        return "—"
    total = max(int(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def reference_link(reference: str) -> str | None:
    """Where the page of a referenced record is: `lead:<uuid>` -> /leads/<uuid>. Only for a
    reference no describer knows (references.py); a describer's summary carries its own link."""
    kind, _, ident = reference.partition(":")
    if kind == "lead":
        try:
            return f"/leads/{uuid.UUID(ident)}"
        except ValueError:
            return None
    return None


def business_zone(request: Request) -> str:
    return str(request.app.state.settings.business_timezone)


# -- the agent's inbox ------------------------------------------------------------------------
def age_text(start: datetime | None, now: datetime) -> str:
    """How long ago, in the reader's language: "5 мин", "2 ч", "3 дн."."""
    if start is None:
        return "—"
    age = max(now - start, timedelta(0))
    if age < timedelta(minutes=1):
        return _("under a minute")
    return format_timedelta(age, format="short", threshold=1.0, locale=locale_var.get())


def _work(
    reference: str,
    summary: ReferenceSummary | None,
    *,
    priority: int,
    created_at: datetime | None,
    due_at: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    """What the inbox shows of one offer or item: the record's summary when its context
    describes it (customer, phone, loan, source), else the bare reference."""
    start = summary.created_at if summary and summary.created_at else created_at
    due = due_at or (summary.due_at if summary else None)
    return {
        "reference": reference,
        "title": summary.title if summary else reference,
        "described": summary is not None,
        "link": summary.link if summary else reference_link(reference),
        "phone": summary.phone if summary else None,
        "product": summary.product if summary else None,
        "source": summary.source if summary else None,
        "priority": priority,
        "created_at": start,
        "age": age_text(start, now),
        "due_at": due,
        "overdue": due is not None and due < now,
    }


async def _inbox_context(session: AsyncSession, agent: Agent | None) -> dict[str, Any]:
    if agent is None:
        return {"agent": None}
    now = utcnow()
    offer_rows = await service.pending_offers_of(session, agent.id)
    item_rows = await service.open_items_of(session, agent.id)
    summaries = await describe_references(
        session, [row.reference for row in offer_rows] + [item.reference for item in item_rows]
    )
    offers = [
        {
            **_work(
                row.reference,
                summaries.get(row.reference),
                priority=row.priority,
                created_at=None,
                due_at=None,
                now=now,
            ),
            "id": row.id,
            "kind": row.kind,
            "seconds_left": seconds_between(now, row.expires_at),
            "expires_at": row.expires_at,
        }
        for row in offer_rows
    ]
    items = [
        {
            **_work(
                item.reference,
                summaries.get(item.reference),
                priority=item.priority,
                created_at=item.created_at,
                due_at=item.first_response_due_at if item.first_response_at is None else None,
                now=now,
            ),
            "kind": item.kind,
            "assigned_at": item.assigned_at,
        }
        for item in item_rows
    ]
    return {
        "agent": agent,
        "status_label": _(STATUS_LABELS[agent.status]),
        "statuses": choices(STATUS_LABELS),
        "offers": offers,
        "items": items,
        "clock_text": clock_text,
    }


async def _inbox(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    *,
    block: str = "panel",
    notice: str | None = None,
    status_code: int = 200,
) -> Response:
    agent = await agent_service.agent_for_user(session, principal.user_id)
    context = await _inbox_context(session, agent)
    return render(
        request,
        "routing/inbox.html",
        {**context, "notice": notice, "timezone": business_zone(request)},
        block=block,
        status_code=status_code,
    )


def _after_action(request: Request) -> Response | None:
    """htmx gets the refreshed panel; a plain form post goes back to the page."""
    return None if is_htmx(request) else RedirectResponse("/inbox", status_code=303)


async def _own_agent(session: AsyncSession, principal: Principal) -> Agent:
    agent = await agent_service.agent_for_user(session, principal.user_id)
    if agent is None:
        raise NotFound(detail="You are not set up as an agent")
    return agent


@router.get("/inbox")
async def inbox_page(request: Request, session: ReadSession, principal: Worker) -> Response:
    return await _inbox(request, session, principal, block="content")


@router.get("/inbox/panel")
async def inbox_panel(request: Request, session: ReadSession, principal: Worker) -> Response:
    return await _inbox(request, session, principal)


@router.post("/inbox/status")
async def inbox_set_status(request: Request, session: WriteSession, principal: Worker) -> Response:
    agent = await _own_agent(session, principal)
    status = text(await request.form(), "status")
    if status not in AGENT_STATUSES:
        raise ValidationFailed.on("body.status", "Choose available, away or offline")
    await agent_service.set_status(session, agent.id, status)
    return _after_action(request) or await _inbox(request, session, principal)


@router.post("/inbox/offers/{offer_id}/accept")
async def inbox_accept_offer(
    request: Request, offer_id: uuid.UUID, session: WriteSession, principal: Worker
) -> Response:
    return await _answer_offer(request, session, principal, offer_id, accept=True)


@router.post("/inbox/offers/{offer_id}/decline")
async def inbox_decline_offer(
    request: Request, offer_id: uuid.UUID, session: WriteSession, principal: Worker
) -> Response:
    return await _answer_offer(request, session, principal, offer_id, accept=False)


async def _answer_offer(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    offer_id: uuid.UUID,
    *,
    accept: bool,
) -> Response:
    agent = await _own_agent(session, principal)
    offer = await service.get_offer(session, offer_id)
    if offer.agent_id != agent.id:
        raise NotFound(detail="No such offer")  # other agents' offers are invisible
    try:
        if accept:
            await service.accept_offer(session, offer_id, agent.id)
        else:
            await service.decline_offer(session, offer_id, agent.id)
    except Conflict:
        await session.rollback()
        notice = _("This offer is no longer open: it expired or went to someone else.")
        status_code = 200 if is_htmx(request) else 409  # htmx swaps only successful answers
        return await _inbox(request, session, principal, notice=notice, status_code=status_code)
    return _after_action(request) or await _inbox(request, session, principal)


@router.get("/inbox/stream")
async def inbox_stream(request: Request, session: ReadSession, principal: Worker) -> Response:
    agent = await agent_service.agent_for_user(session, principal.user_id)
    if agent is None:
        return Response(status_code=204)  # tells EventSource not to reconnect
    return sse_response(
        get_hub(request.app), [agent_topic(agent.id)], min_interval=INBOX_REFRESH_SECONDS
    )


# -- the managers' board ----------------------------------------------------------------------
def share_text(value: float | None) -> str:
    """33 % (33% in English); a dash for none."""
    return "—" if value is None else format_percent(value, locale=locale_var.get())


def deviation_text(value: float | None) -> str:
    """+71 % or -14 % (share / expected - 1); a dash for none."""
    if value is None:
        return "—"
    text = format_percent(value, locale=locale_var.get())
    return f"+{text}" if round(value, 2) > 0 else text


async def _fair_shares(
    session: AsyncSession, stats: list[Any], agents: list[Agent]
) -> list[fairness.FairnessReport]:
    """The fair share of every queue on the board with a pool or assignments (two statements
    whatever the number of queues; the board already knows every agent's name)."""
    reports = await fairness.reports_for(
        session,
        [(row.queue_id, row.name) for row in stats],
        names={agent.id: agent.name for agent in agents},
    )
    return [report for report in reports if report.pool_size or report.assignments]


async def _board_context(session: AsyncSession) -> dict[str, Any]:
    stats = await queue_service.queue_stats(session)
    queues = {queue.id: queue for queue in await queue_service.list_queues(session)}
    agents = await agent_service.list_agents(session)
    return {
        "fair_shares": await _fair_shares(session, stats, agents),
        "share_text": share_text,
        "deviation_text": deviation_text,
        "queues": [
            {
                "stats": row,
                "strategy": _(STRATEGY_LABELS.get(queues[row.queue_id].strategy, "?")),
                "mode": _(MODE_LABELS.get(queues[row.queue_id].offer_mode, "?")),
                "active": queues[row.queue_id].is_active,
            }
            for row in stats
            if row.queue_id in queues
        ],
        "agents": agents,
        "status_labels": {value: _(label) for value, label in STATUS_LABELS.items()},
        "clock_text": clock_text,
    }


@router.get("/board")
async def board_page(request: Request, session: ReadSession, principal: Reader) -> Response:
    context = await _board_context(session)
    context["timezone"] = business_zone(request)
    return render(request, "routing/board.html", context, block="content")


@router.get("/board/panel")
async def board_panel(request: Request, session: ReadSession, principal: Reader) -> Response:
    context = await _board_context(session)
    context["timezone"] = business_zone(request)
    return render(request, "routing/board.html", context, block="panel")


@router.get("/board/stream")
async def board_stream(request: Request, principal: Reader) -> Response:
    return sse_response(get_hub(request.app), [BOARD_TOPIC], min_interval=BOARD_REFRESH_SECONDS)


router.include_router(admin_views.router)
router.include_router(rule_views.router)
router.include_router(simulate_views.router)
