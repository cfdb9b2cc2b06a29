"""What the what-if simulator replays, read from the database: the agents' timelines, the
queues, every work item up to the end of the period with its recorded offers and owners, and
what really happened (the `Outcome` the report compares with).

The simulation replays the whole recorded history up to the end of the period, so the state
at its start (loads, last assignments, tie-break draws, quotas) is the one the engine had:
items that arrived before the period are placed by the rules that really placed them; those
that arrive in it by the rules under test. Reads are plain SELECTs in a read session; nothing
is written.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts.routing import queue_catalog as catalog
from allot.contexts.routing import rule_catalog
from allot.contexts.routing.models import (
    Agent,
    AgentTimelineEntry,
    Decision,
    Offer,
    Queue,
    RuleSet,
    WorkItem,
)
from allot.contexts.routing.queue_catalog import QueueRules
from allot.contexts.routing.rule_catalog import Rules
from allot.contexts.routing.rules import RuleSetDefinition, check_definition
from allot.contexts.routing.simulation_model import (
    AgentChange,
    Assignment,
    Episode,
    History,
    ItemPlacement,
    ItemRecord,
    Outcome,
    QueueSpec,
    RecordedOffer,
)
from allot.kernel.config import get_settings
from allot.kernel.errors import FieldError, NotFound, ValidationFailed

RECORDED = "recorded"  # replay each item under the rules that really placed it
PASTED_RULES_ID = uuid.UUID(int=0)
ANSWERS = ("accepted", "declined", "timed_out")


@dataclass(frozen=True, slots=True)
class Loaded:
    history: History
    reality: Outcome


# -- the rules to try ------------------------------------------------------------------------
async def rules_from_json(session: AsyncSession, text: str, field: str = "rules") -> Rules:
    """A rule set definition given as JSON (`{...}` or `{"definition": {...}}`), validated as
    a saved one is: its expressions compile and the queues it names are active."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValidationFailed.on(field, f"Not JSON: {exc}", "invalid_json") from None
    if isinstance(data, dict) and isinstance(data.get("definition"), dict):
        data = data["definition"]
    try:
        definition = RuleSetDefinition.model_validate(data)
    except ValidationError as exc:
        errors = [
            FieldError(".".join([field, *(str(p) for p in e["loc"])]), e["msg"], "invalid")
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
        raise ValidationFailed(detail=detail, errors=errors) from None
    known = {queue.name for queue in await catalog.active_queues(session)}
    check_definition(definition, known, field)
    return Rules(PASTED_RULES_ID, 0, definition)


async def rules_by_version(session: AsyncSession, version: int) -> Rules:
    row = await session.scalar(select(RuleSet).where(RuleSet.version == version))
    if row is None:
        raise NotFound(detail=f"No rule set version {version}")
    return rule_catalog.rules_of(row)


def period_bounds(
    first: str, last: str, zone: ZoneInfo, field: str = "period"
) -> tuple[datetime, datetime]:
    """[start, end) from two days (YYYY-MM-DD, in the business time zone; `last` is included:
    the period ends at the start of the day after it) or two ISO date-times (`last` excluded;
    without an offset they are read in the business time zone)."""
    bounds = []
    for text, is_end, name in ((first, False, "from"), (last, True, "to")):
        text = text.strip()
        try:
            if len(text) == 10:
                moment = datetime.combine(date.fromisoformat(text), time(0), zone)
                moment += timedelta(days=1) if is_end else timedelta(0)
            else:
                moment = datetime.fromisoformat(text)
                moment = moment if moment.tzinfo else moment.replace(tzinfo=zone)
        except ValueError:
            raise ValidationFailed.on(
                f"{field}.{name}", "Expected YYYY-MM-DD or an ISO date-time", "invalid_date"
            ) from None
        bounds.append(moment.astimezone(UTC))
    if bounds[1] <= bounds[0]:
        raise ValidationFailed.on(f"{field}.to", "The period ends before it starts", "date_order")
    return bounds[0], bounds[1]


# -- the history -----------------------------------------------------------------------------
async def load_history(
    session: AsyncSession,
    *,
    start: datetime,
    end: datetime,
    rules: Rules | str | None = RECORDED,
    label: str | None = None,
) -> Loaded:
    """Everything up to `end`; items arriving in [start, end) placed by `rules` (a rule set,
    None for no rules at all, or RECORDED for the rules that really placed each one)."""
    queues = await _queues(session)
    active = tuple(q.id for q in await catalog.active_queues(session))
    agents = list((await session.execute(select(Agent))).scalars())
    changes = await _changes(session, agents, end)
    items = list(
        (
            await session.execute(
                select(WorkItem)
                .where(WorkItem.created_at < end)
                .order_by(WorkItem.created_at, WorkItem.reference)
            )
        ).scalars()
    )
    # All of these items' decisions and offers, also those after the end: an item's stored
    # first-response due date is its latest, and later take-backs moved it (_due_offset).
    arrived = select(WorkItem.id).where(WorkItem.created_at < end)
    decisions = await _by_item(
        session,
        select(Decision)
        .where(Decision.item_id.in_(arrived))
        .order_by(Decision.occurred_at, Decision.id),
    )
    offers = await _by_item(
        session,
        select(Offer).where(Offer.item_id.in_(arrived)).order_by(Offer.created_at, Offer.id),
    )
    records = []
    reality = Outcome()
    for item in items:
        own = decisions.get(item.id, [])
        under = RECORDED if item.created_at < start else rules
        placement = await _placement(session, item, own, under)
        records.append(_record(item, placement, own, offers.get(item.id, [])))
        _add_reality(reality, item, own)
    reality.assignments.sort(key=lambda a: a.at)
    reality.offers.update(  # how each offer made in the period stood at its end
        o.status if o.responded_at is not None and o.responded_at < end else "pending"
        for item_offers in offers.values()
        for o in item_offers
        if start <= o.created_at < end and o.status != "reclaimed"
    )
    answers: dict[uuid.UUID, list[tuple[str, float]]] = defaultdict(list)
    for item_offers in offers.values():
        for o in item_offers:
            if o.status in ANSWERS and o.responded_at is not None and o.responded_at < end:
                answers[o.agent_id].append(
                    (o.status, (o.responded_at - o.created_at).total_seconds())
                )
    history = History(
        start=start,
        end=end,
        zone=ZoneInfo(get_settings().business_timezone),
        queues=queues,
        active_queues=active,
        agent_facts={a.id: {"name": a.name, "email": a.email} for a in agents},
        agent_names={a.id: a.name for a in agents},
        changes=changes,
        items=records,
        answers={agent: tuple(sorted(found)) for agent, found in sorted(answers.items())},
        rules_label=label or _label(rules),
    )
    return Loaded(history, reality)


def _label(rules: Rules | str | None) -> str:
    if rules == RECORDED:
        return RECORDED
    if rules is None:
        return "none"
    assert isinstance(rules, Rules)
    return f"v{rules.version}" if rules.id != PASTED_RULES_ID else "file"


async def _queues(session: AsyncSession) -> dict[uuid.UUID, QueueSpec]:
    rows = (await session.execute(select(Queue))).scalars()
    return {
        q.id: QueueSpec(
            QueueRules.of(q),
            q.member_expression or "",
            tuple(q.member_teams or ()),
            q.reclaim_grace_seconds,
        )
        for q in rows
    }


async def _changes(session: AsyncSession, agents: list[Agent], end: datetime) -> list[AgentChange]:
    rows = list(
        (
            await session.execute(
                select(AgentTimelineEntry)
                .where(AgentTimelineEntry.at < end)
                .order_by(AgentTimelineEntry.at, AgentTimelineEntry.id)
            )
        ).scalars()
    )
    changes = [_change(r, r.id.int) for r in rows]
    first_rows: dict[uuid.UUID, AgentTimelineEntry] = {}
    for row in rows:
        first_rows.setdefault(row.agent_id, row)
    # An agent created before the timeline existed: its creation stands at its `created_at`,
    # as its first row says it was then (or, with no row at all, as it is now).
    created = []
    for agent in agents:
        first = first_rows.get(agent.id)
        if first is not None and first.change == "created":
            continue
        if agent.created_at < end:
            created.append(_change(first or agent, 0, at=agent.created_at, change="created"))
    return sorted(created + changes, key=lambda c: (c.at, c.order))


def _change(
    row: Any, order: int, *, at: datetime | None = None, change: str | None = None
) -> AgentChange:
    """A timeline row, or an agent row standing for its (unrecorded) creation."""
    return AgentChange(
        agent_id=row.agent_id if isinstance(row, AgentTimelineEntry) else row.id,
        at=at or row.at,
        order=order,
        change=change or row.change,
        status=row.status,
        is_active=row.is_active,
        on_leave=row.on_leave,
        off_shift=row.off_shift,
        capacity=row.capacity,
        capacity_by_kind=dict(row.capacity_by_kind or {}),
        weight=float(row.weight),
        daily_quota=row.daily_quota,
        monthly_quota=row.monthly_quota,
        attributes=dict(row.attributes or {}),
    )


async def _by_item(session: AsyncSession, statement: Any) -> dict[uuid.UUID, list[Any]]:
    grouped: dict[uuid.UUID, list[Any]] = defaultdict(list)
    for row in (await session.execute(statement)).scalars():
        grouped[row.item_id].append(row)
    return grouped


async def _placement(
    session: AsyncSession, item: WorkItem, decisions: list[Decision], rules: Rules | str | None
) -> ItemPlacement:
    """rule_catalog.place under the rules given; RECORDED: under the version that placed it,
    or, placed without rules, in the queue its first decision names (a queue given with the
    item, or the default for its kind then)."""
    if rules == RECORDED:
        recorded = await rule_catalog.rules_by_id(session, item.rule_set_id)
        if recorded is None:
            queue_id = decisions[0].queue_id if decisions else item.queue_id
            return ItemPlacement(queue_id, item.submitted_priority)
        rules = recorded
    assert not isinstance(rules, str)
    placed = await rule_catalog.place(
        session,
        kind=item.kind,
        attributes=item.attributes or {},
        priority=item.submitted_priority,
        weight=item.weight,
        rules=rules,
    )
    queue_id = placed.queue.id if placed.queue is not None else None
    return ItemPlacement(queue_id, placed.priority, placed.rules, placed.filter_index)


def _episodes(item: WorkItem, decisions: list[Decision]) -> list[Episode]:
    """The item's real owners in turn, from its decisions: an `assigned` decision starts a
    hold; the item's next decision (its reroute after being taken back) or its closing ends it."""
    holds: list[tuple[uuid.UUID, datetime, datetime | None, str]] = []
    current: tuple[uuid.UUID, datetime] | None = None
    for decision in decisions:
        if current is not None:
            holds.append((*current, decision.occurred_at, "unassigned"))
            current = None
        if decision.outcome == "assigned" and decision.agent_ids:
            current = (uuid.UUID(str(decision.agent_ids[0])), decision.occurred_at)
    if current is not None:
        if item.closed_at is None:
            holds.append((*current, None, "open"))
        else:
            ended = "completed" if item.state == "completed" else "closed"
            holds.append((*current, item.closed_at, ended))
    episodes = []
    answered = item.first_response_at
    for agent_id, began, ended_at, how in holds:
        response = None
        if (
            answered is not None
            and began <= answered
            and (ended_at is None or answered <= ended_at)
        ):
            response = (answered - began).total_seconds()
            answered = None  # one first response
        duration = (ended_at - began).total_seconds() if ended_at is not None else None
        episodes.append(Episode(agent_id, began, how, duration, response))
    return episodes


def _due_offset(item: WorkItem, episodes: list[Episode]) -> float | None:
    """The first-response window the item came with: its stored due date is the latest one,
    which each take-back moved (closing.unassign: now + (due - created_at)); undone here."""
    due = item.first_response_due_at
    if due is None:
        return None
    for episode in reversed(episodes):
        if episode.ended == "unassigned" and episode.duration is not None:
            taken_back = episode.start + timedelta(seconds=episode.duration)
            due = due - (taken_back - item.created_at)
    return (due - item.created_at).total_seconds()


def _record(
    item: WorkItem, placement: ItemPlacement, decisions: list[Decision], offers: list[Offer]
) -> ItemRecord:
    episodes = _episodes(item, decisions)
    outside = None
    completed_in_hold = any(e.ended == "completed" for e in episodes)
    if item.closed_at is not None and (
        item.state == "cancelled" or (item.state == "completed" and not completed_in_hold)
    ):
        outside = (item.closed_at, item.state)
    recorded = tuple(
        RecordedOffer(
            o.agent_id,
            o.status,
            o.created_at,
            (o.responded_at - o.created_at).total_seconds() if o.responded_at else None,
        )
        for o in offers
        if o.status != "reclaimed"
    )
    return ItemRecord(
        id=item.id,
        reference=item.reference,
        kind=item.kind,
        attributes=dict(item.attributes or {}),
        weight=item.weight,
        created_at=item.created_at,
        placement=placement,
        due_offset=_due_offset(item, episodes),
        episodes=tuple(episodes),
        offers=recorded,
        closed_outside=outside,
    )


def _add_reality(reality: Outcome, item: WorkItem, decisions: list[Decision]) -> None:
    for decision in decisions:
        if decision.outcome == "assigned" and decision.agent_ids:
            agent_id = uuid.UUID(str(decision.agent_ids[0]))
            reality.assignments.append(
                Assignment(item.id, agent_id, decision.queue_id, decision.occurred_at)
            )
            reality.first_assigned.setdefault(item.id, decision.occurred_at)
    if item.first_response_at is not None:
        reality.first_response[item.id] = item.first_response_at
    if item.closed_at is not None:
        reality.closed[item.id] = (item.state, item.closed_at)
