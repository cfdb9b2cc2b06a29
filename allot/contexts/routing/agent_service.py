"""Agents: who can take work, how much, and when (status, presence, schedule, leave, quotas)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from allot.contexts import audit, identity
from allot.contexts.routing import engine, events, membership, mirror
from allot.contexts.routing import repository as repo
from allot.contexts.routing.flow import Moment
from allot.contexts.routing.models import (
    Agent,
    AgentKindLoad,
    AgentLeave,
    AgentTimelineEntry,
    Queue,
    QueueMember,
    WorkItem,
)
from allot.contexts.routing.schedule import next_change, on_shift, validate_schedule
from allot.contexts.routing.schemas import AgentCreate, AgentUpdate, LeaveCreate
from allot.kernel import timers
from allot.kernel.config import get_settings
from allot.kernel.db.deferred import defer_insert
from allot.kernel.errors import Conflict, NotFound, ValidationFailed
from allot.kernel.events import publish
from allot.kernel.ids import new_id
from allot.kernel.presence import PresenceUnavailable, presence_store

RECLAIM_AFTER_OFFLINE = "routing.reclaim"
PRESENCE_CHECK = "routing.presence_check"
PRESENCE_GROUP = "agents"  # the presence store's group of agent ids
SHIFT_CHANGE = "routing.shift_change"
LEAVE_CHANGE = "routing.leave_change"

TIMELINE: Table = AgentTimelineEntry.__table__  # type: ignore[assignment]

_AUDITED = (
    "name",
    "email",
    "capacity",
    "attributes",
    "weight",
    "capacity_by_kind",
    "daily_quota",
    "monthly_quota",
    "schedule",
    "is_active",
    "status",
)


def _snapshot(agent: Agent) -> dict[str, Any]:
    return {name: getattr(agent, name) for name in _AUDITED}


async def _publish_agent(session: AsyncSession, type_: str, agent: Agent, **extra: Any) -> None:
    await publish(
        session,
        type=type_,
        aggregate_type="routing.agent",
        aggregate_id=agent.id,
        payload={
            "agent_id": str(agent.id),
            "user_id": str(agent.user_id) if agent.user_id else None,
            "status": agent.status,
            "load": agent.load,
            "capacity": agent.capacity,
            **extra,
        },
    )


def _attributes(body: AgentCreate | AgentUpdate, current: dict[str, Any]) -> dict[str, Any]:
    merged = dict(current)
    if body.attributes is not None:
        merged.update(body.attributes)
    for name in ("skills", "languages", "regions", "teams"):
        value = getattr(body, name)
        if value is not None:
            merged[name] = sorted(set(value))
    return merged


def _record_timeline(session: AsyncSession, agent: Agent, at: Moment, change: str) -> None:
    """Append the agent's availability and capacity as they are now to its timeline (one
    deferred INSERT at commit): the what-if simulator replays who could take work when."""
    defer_insert(
        session,
        TIMELINE,
        {
            "id": new_id(),
            "agent_id": agent.id,
            "at": at.now,
            "change": change,
            "status": agent.status,
            "is_active": agent.is_active,
            "on_leave": agent.on_leave,
            "off_shift": agent.off_shift,
            "capacity": agent.capacity,
            "capacity_by_kind": dict(agent.capacity_by_kind or {}),
            "weight": float(agent.weight),
            "daily_quota": agent.daily_quota,
            "monthly_quota": agent.monthly_quota,
            "attributes": dict(agent.attributes or {}),
        },
    )


async def _sync_kind_caps(session: AsyncSession, agent: Agent) -> None:
    existing = {
        row.kind: row
        for row in (
            await session.execute(select(AgentKindLoad).where(AgentKindLoad.agent_id == agent.id))
        ).scalars()
    }
    for kind, cap in (agent.capacity_by_kind or {}).items():
        if kind in existing:
            existing.pop(kind).capacity = int(cap)
        else:
            load = await session.scalar(
                select(func.coalesce(func.sum(WorkItem.weight), 0)).where(
                    WorkItem.owner_agent_id == agent.id,
                    WorkItem.state == "assigned",
                    WorkItem.kind == kind,
                )
            )
            session.add(
                AgentKindLoad(agent_id=agent.id, kind=kind, capacity=int(cap), load=int(load or 0))
            )
    for row in existing.values():
        await session.delete(row)


async def create_agent(session: AsyncSession, body: AgentCreate) -> Agent:
    validate_schedule(body.schedule)
    at = Moment.read()
    user_id = None
    if body.email:
        user = await identity.get_user_by_email(session, str(body.email))
        if user is None:  # agents are users: an operator account is opened for them
            user = await identity.create_user(
                session,
                email=str(body.email),
                password=None,
                roles=["operator"],
                display_name=body.name,
            )
        elif await session.scalar(select(Agent.id).where(Agent.user_id == user.id)):
            raise Conflict(detail="This user already is an agent")
        user_id = user.id
    attributes = _attributes(body, {})
    agent = Agent(
        user_id=user_id,
        name=body.name,
        email=str(body.email) if body.email else None,
        attributes=attributes,
        capacity=body.capacity,
        weight=body.weight,
        capacity_by_kind=body.capacity_by_kind,
        daily_quota=body.daily_quota,
        monthly_quota=body.monthly_quota,
        schedule=body.schedule,
        status=body.status,
        status_changed_at=at.now,
        last_heartbeat_at=at.now if body.status != "offline" else None,
        off_shift=not on_shift(body.schedule, at.now),
        idle_since=at.now,
    )
    session.add(agent)
    await session.flush()
    await _sync_kind_caps(session, agent)
    await membership.refresh_agent(session, agent, at)
    _record_timeline(session, agent, at, "created")
    await _schedule_shift_timer(session, agent, at)
    await audit.record(
        session,
        action="routing.agent.created",
        object_type="routing.agent",
        object_id=agent.id,
        after=_snapshot(agent),
        personal_fields=("name", "email"),
    )
    await _publish_agent(session, events.AGENT_CREATED, agent)
    if agent.status == "available":
        await engine.fill_agent(session, agent.id, at)
    return agent


async def get_agent(session: AsyncSession, agent_id: uuid.UUID) -> Agent:
    agent = await session.get(Agent, agent_id)
    if agent is None:
        raise NotFound(detail="No such agent")
    return agent


async def agent_for_user(session: AsyncSession, user_id: uuid.UUID) -> Agent | None:
    return await session.scalar(select(Agent).where(Agent.user_id == user_id))


async def update_agent(session: AsyncSession, agent_id: uuid.UUID, body: AgentUpdate) -> Agent:
    """PATCH semantics: a field left out keeps its value; one sent as null clears it (quotas: no
    quota; schedule: none, always on shift; skills ... teams: empty). The schema refuses null
    for the fields that cannot be empty (name, capacity, weight, ...)."""
    await repo.lock_items_offered_to(session, agent_id)
    agent = await get_agent(session, agent_id)
    before = _snapshot(agent)
    at = Moment.read()
    changes = body.model_dump(exclude_unset=True)
    cleared_lists: dict[str, Any] = {
        name: []
        for name in ("skills", "languages", "regions", "teams")
        if name in changes and changes[name] is None
    }
    if cleared_lists:
        body = body.model_copy(update=cleared_lists)
    if "schedule" in changes:
        schedule = body.schedule or {}
        validate_schedule(schedule)
        agent.schedule = schedule
        agent.off_shift = not on_shift(schedule, at.now)
        await _schedule_shift_timer(session, agent, at)
    if "capacity" in changes and body.capacity is not None:
        if body.capacity < agent.load:
            # Never below the work already held (I1); lower it after work completes.
            raise ValidationFailed.on(
                "body.capacity", f"Below the current load ({agent.load})", "below_load"
            )
        agent.capacity = body.capacity
    for name in ("name", "weight"):
        if name in changes and changes[name] is not None:
            setattr(agent, name, changes[name])
    for name in ("daily_quota", "monthly_quota"):
        if name in changes:  # null (an emptied form input) removes the quota
            setattr(agent, name, changes[name])
    if any(n in changes for n in ("skills", "languages", "regions", "teams", "attributes")):
        agent.attributes = _attributes(body, agent.attributes or {})
    if "capacity_by_kind" in changes and body.capacity_by_kind is not None:
        agent.capacity_by_kind = body.capacity_by_kind
        await _sync_kind_caps(session, agent)
    if "is_active" in changes and body.is_active is not None and body.is_active != agent.is_active:
        agent.is_active = body.is_active
    await session.flush()
    await membership.refresh_agent(session, agent, at)
    await audit.record(
        session,
        action="routing.agent.updated",
        object_type="routing.agent",
        object_id=agent.id,
        before=before,
        after=_snapshot(agent),
        personal_fields=("name", "email"),
    )
    await _publish_agent(session, events.AGENT_UPDATED, agent)
    await _after_availability_change(session, agent, at, change="updated")
    return agent


async def set_status(
    session: AsyncSession, agent_id: uuid.UUID, status: str, *, reason: str = "manual"
) -> Agent:
    await repo.lock_items_offered_to(session, agent_id)
    agent = await get_agent(session, agent_id)
    at = Moment.read()
    if status != "offline":
        agent.last_heartbeat_at = at.now
    if agent.status == status:
        if status != "offline":
            await _schedule_presence_check(session, agent, at)
        return agent
    before = {"status": agent.status}
    agent.status = status
    agent.status_changed_at = at.now
    await session.flush()
    state = await repo.load_agent_state(session, agent.id)
    await mirror.sync_memberships(session, state, at.today, at.month)
    await audit.record(
        session,
        action="routing.agent.status_changed",
        object_type="routing.agent",
        object_id=agent.id,
        before=before,
        after={"status": status, "reason": reason},
    )
    await _publish_agent(session, events.AGENT_STATUS_CHANGED, agent, reason=reason)
    if status != "offline":
        await _schedule_presence_check(session, agent, at)
    await _after_availability_change(session, agent, at, change="status")
    return agent


async def heartbeat(session: AsyncSession, agent_id: uuid.UUID) -> Agent:
    """The agent's UI is alive; without one for the presence grace, the agent goes offline.

    With Redis (`kernel.presence`) the beat goes there and the database is not written: the
    presence timer, armed when the agent came online or on its first beat, reads the beat when
    it fires (`check_presence`). The row's `last_heartbeat_at` then lags by up to the grace.
    Without Redis, or while it is down, the beat is written to the row and re-arms the timer."""
    agent = await get_agent(session, agent_id)
    at = Moment.read()
    first = await presence_store().beat(PRESENCE_GROUP, str(agent.id), at.now)
    if first is None:  # the database is the store
        agent.last_heartbeat_at = at.now
        if agent.status != "offline":
            await _schedule_presence_check(session, agent, at)
        return agent
    set_committed_value(agent, "last_heartbeat_at", at.now)  # answered, not written
    if first and agent.status != "offline":
        await _schedule_presence_check(session, agent, at)
    return agent


async def check_presence(
    session: AsyncSession, agent_id: uuid.UUID, payload: dict[str, Any]
) -> None:
    """The presence timer fired: the agent goes offline unless it beat within the grace.

    Without Redis, a beat re-arms the timer, so firing means none came (the row's time is then
    at least a grace old). With Redis, the latest beat is read from there: a recent one moves
    the timer to that beat + grace (and the row's time with it, one write per grace instead of
    one per beat). If Redis cannot be read, nobody is put offline on that account: the check
    waits one more grace, during which beats fall back to the row, then decides from the row."""
    agent = await session.get(Agent, agent_id)
    if agent is None or agent.status == "offline":
        return
    at = Moment.read()
    grace = timedelta(seconds=get_settings().presence_grace_seconds)
    store = presence_store()
    try:
        beat = await store.last_beat(PRESENCE_GROUP, str(agent.id))
    except PresenceUnavailable:
        if not payload.get("unverified"):
            await _schedule_presence_check(session, agent, at, unverified=True)
            return
        beat = None
    last = max((t for t in (beat, agent.last_heartbeat_at) if t is not None), default=None)
    if last is not None and last + grace > at.now:
        agent.last_heartbeat_at = last
        await _schedule_presence_check(session, agent, Moment(last, at.today, at.month))
        return
    await set_status(session, agent.id, "offline", reason="presence_lost")
    await store.forget(PRESENCE_GROUP, str(agent.id))


async def add_leave(session: AsyncSession, agent_id: uuid.UUID, body: LeaveCreate) -> AgentLeave:
    if body.ends_on < body.starts_on:
        raise ValidationFailed.on("body.ends_on", "Ends before it starts", "date_order")
    agent = await get_agent(session, agent_id)
    leave = AgentLeave(
        agent_id=agent.id, starts_on=body.starts_on, ends_on=body.ends_on, reason=body.reason
    )
    session.add(leave)
    await session.flush()
    await audit.record(
        session,
        action="routing.agent.leave_added",
        object_type="routing.agent",
        object_id=agent.id,
        after={"starts_on": body.starts_on.isoformat(), "ends_on": body.ends_on.isoformat()},
    )
    await refresh_leave(session, agent, Moment.read())
    return leave


async def refresh_leave(session: AsyncSession, agent: Agent, at: Moment) -> None:
    """Recompute `on_leave` for today and set a timer for the next leave boundary."""
    leaves = list(
        (
            await session.execute(
                select(AgentLeave).where(
                    AgentLeave.agent_id == agent.id, AgentLeave.ends_on >= at.today
                )
            )
        ).scalars()
    )
    on_leave = any(leave.starts_on <= at.today <= leave.ends_on for leave in leaves)
    zone = timezone_of_business()
    boundaries = sorted(
        {leave.starts_on for leave in leaves if leave.starts_on > at.today}
        | {leave.ends_on + timedelta(days=1) for leave in leaves}
    )
    if boundaries:
        from datetime import datetime, time

        when = datetime.combine(boundaries[0], time(0, 0), zone)
        await timers.schedule(
            session, LEAVE_CHANGE, when, {"agent_id": str(agent.id)}, key=f"leave:{agent.id}"
        )
    if on_leave != agent.on_leave:
        agent.on_leave = on_leave
        await session.flush()
        await _after_availability_change(session, agent, at, change="leave")


def timezone_of_business() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(get_settings().business_timezone)


async def _after_availability_change(
    session: AsyncSession, agent: Agent, at: Moment, *, change: str
) -> None:
    """Mirror the agent, then: take backlog if it can work; else hand its offers on and, for an
    agent who left (offline, leave, deactivated), reclaim its open work after the grace.

    Every change of an agent's availability or capacity comes through here (creation aside),
    so this is where its timeline row is written (`change`: updated, status, leave, shift)."""
    _record_timeline(session, agent, at, change)
    state = await repo.load_agent_state(session, agent.id)
    await mirror.sync_memberships(session, state, at.today, at.month)
    if agent.can_take_work:
        await timers.cancel(session, f"reclaim:{agent.id}")
        await engine.fill_agent(session, agent.id, at)
        return
    await engine.rescind_offers_of(session, agent.id, at)
    gone = agent.status == "offline" or agent.on_leave or not agent.is_active
    if gone and await repo.open_items_of_agent(session, agent.id):
        grace = await _reclaim_grace(session, agent.id)
        await timers.schedule(
            session,
            RECLAIM_AFTER_OFFLINE,
            at.now + timedelta(seconds=grace),
            {"agent_id": str(agent.id)},
            key=f"reclaim:{agent.id}",
        )


async def _reclaim_grace(session: AsyncSession, agent_id: uuid.UUID) -> int:
    grace = await session.scalar(
        select(func.min(Queue.reclaim_grace_seconds))
        .join(QueueMember, QueueMember.queue_id == Queue.id)
        .where(QueueMember.agent_id == agent_id)
    )
    return int(grace if grace is not None else 300)


async def _schedule_presence_check(
    session: AsyncSession, agent: Agent, at: Moment, *, unverified: bool = False
) -> None:
    grace = get_settings().presence_grace_seconds
    payload: dict[str, Any] = {"agent_id": str(agent.id)}
    if unverified:  # the last check could not read the presence store
        payload["unverified"] = True
    await timers.schedule(
        session,
        PRESENCE_CHECK,
        at.now + timedelta(seconds=grace),
        payload,
        key=f"presence:{agent.id}",
    )


async def _schedule_shift_timer(session: AsyncSession, agent: Agent, at: Moment) -> None:
    change = next_change(agent.schedule or {}, at.now)
    if change is None:
        await timers.cancel(session, f"shift:{agent.id}")
        return
    await timers.schedule(
        session, SHIFT_CHANGE, change, {"agent_id": str(agent.id)}, key=f"shift:{agent.id}"
    )


async def apply_shift(session: AsyncSession, agent_id: uuid.UUID) -> None:
    agent = await get_agent(session, agent_id)
    at = Moment.read()
    off_shift = not on_shift(agent.schedule or {}, at.now)
    await _schedule_shift_timer(session, agent, at)
    if off_shift != agent.off_shift:
        agent.off_shift = off_shift
        await session.flush()
        await _after_availability_change(session, agent, at, change="shift")


async def list_agents(session: AsyncSession) -> list[Agent]:
    return list((await session.execute(select(Agent).order_by(Agent.name))).scalars())
