"""Lead configuration: the status pipeline (statuses with labels, order and initial/terminal/won
flags, and the transitions allowed between them) and the first-response SLA per source.

The default pipeline (new -> in_progress -> qualified -> won / lost) is seeded on first use, by
whichever transaction first needs it (an intake, a read of the pipeline): inserts that skip
existing keys, so concurrent first uses agree and a later replacement is never overwritten.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts import audit
from allot.kernel.clock import utcnow
from allot.kernel.errors import Conflict, FieldError, ValidationFailed
from allot.kernel.events import publish

from . import events
from . import repository as repo
from .models import DEFAULT_SLA_SOURCE, SOURCE_PATTERN, LeadStatus, SlaPolicy


@dataclass(frozen=True, slots=True)
class StatusDef:
    key: str
    label_ru: str
    label_en: str
    order: int = 0
    initial: bool = False
    terminal: bool = False
    won: bool = False

    @classmethod
    def of(cls, row: LeadStatus) -> StatusDef:
        return cls(
            key=row.key,
            label_ru=row.label_ru,
            label_en=row.label_en,
            order=row.position,
            initial=row.is_initial,
            terminal=row.is_terminal,
            won=row.is_won,
        )

    def row(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label_ru": self.label_ru,
            "label_en": self.label_en,
            "position": self.order,
            "is_initial": self.initial,
            "is_terminal": self.terminal,
            "is_won": self.won,
        }

    def label(self, locale: str) -> str:
        return self.label_en if locale == "en" else self.label_ru


@dataclass(frozen=True, slots=True)
class Pipeline:
    statuses: tuple[StatusDef, ...]
    transitions: tuple[tuple[str, str], ...]

    @property
    def initial(self) -> StatusDef:
        return next(s for s in self.statuses if s.initial)

    def status(self, key: str) -> StatusDef | None:
        return next((s for s in self.statuses if s.key == key), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "statuses": [asdict(s) for s in self.statuses],
            "transitions": [{"from": a, "to": b} for a, b in self.transitions],
        }


DEFAULT_PIPELINE = Pipeline(
    statuses=(
        StatusDef("new", "Новый", "New", 10, initial=True),
        StatusDef("in_progress", "В работе", "In progress", 20),
        StatusDef("qualified", "Квалифицирован", "Qualified", 30),
        StatusDef("won", "Успех", "Won", 40, terminal=True, won=True),
        StatusDef("lost", "Отказ", "Lost", 50, terminal=True),
    ),
    transitions=(
        ("new", "in_progress"),
        ("new", "lost"),
        ("in_progress", "qualified"),
        ("in_progress", "lost"),
        ("qualified", "won"),
        ("qualified", "lost"),
    ),
)


def validate(pipeline: Pipeline, prefix: str = "body") -> None:
    """Keys unique, exactly one initial (not terminal) status, `won` only on terminal statuses,
    transitions between known statuses, none out of a terminal status, every status reachable
    from the initial one. Raises ValidationFailed naming every offending field."""
    errors: list[FieldError] = []
    at = f"{prefix}.statuses"
    seen: set[str] = set()
    for index, status in enumerate(pipeline.statuses):
        if status.key in seen:
            errors.append(FieldError(f"{at}.{index}.key", "Duplicate status key", "duplicate"))
        seen.add(status.key)
        if status.won and not status.terminal:
            errors.append(FieldError(f"{at}.{index}.won", "Only a terminal status can be won"))
        if status.initial and status.terminal:
            errors.append(
                FieldError(f"{at}.{index}.terminal", "The initial status cannot be terminal")
            )
    initials = [s for s in pipeline.statuses if s.initial]
    if len(initials) != 1:
        errors.append(FieldError(at, "Exactly one status must be initial", "initial"))
    terminal = {s.key for s in pipeline.statuses if s.terminal}
    pairs: set[tuple[str, str]] = set()
    for index, (source, target) in enumerate(pipeline.transitions):
        where = f"{prefix}.transitions.{index}"
        for name, key in (("from", source), ("to", target)):
            if key not in seen:
                errors.append(FieldError(f"{where}.{name}", "No such status", "unknown_status"))
        if source in terminal:
            errors.append(
                FieldError(f"{where}.from", "A terminal status has no way out", "terminal")
            )
        if source == target:
            errors.append(FieldError(where, "A status cannot move to itself", "self_transition"))
        if (source, target) in pairs:
            errors.append(FieldError(where, "Duplicate transition", "duplicate"))
        pairs.add((source, target))
    if len(initials) == 1 and not errors:
        reachable = _reachable(initials[0].key, pipeline.transitions)
        for index, status in enumerate(pipeline.statuses):
            if status.key not in reachable:
                errors.append(
                    FieldError(
                        f"{at}.{index}.key",
                        "Not reachable from the initial status",
                        "unreachable",
                    )
                )
    if errors:
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
        raise ValidationFailed(detail=detail, errors=errors)


def _reachable(start: str, transitions: tuple[tuple[str, str], ...]) -> set[str]:
    seen, todo = {start}, deque([start])
    while todo:
        current = todo.popleft()
        for source, target in transitions:
            if source == current and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


async def ensure_seeded(session: AsyncSession) -> None:
    """Seed the default pipeline if there is none yet (idempotent, safe to race)."""
    await repo.seed_pipeline(
        session,
        [s.row() for s in DEFAULT_PIPELINE.statuses],
        [{"from_key": a, "to_key": b} for a, b in DEFAULT_PIPELINE.transitions],
    )


async def get_pipeline(session: AsyncSession) -> Pipeline:
    """The pipeline in force (the default one until the first intake seeds it); never writes,
    so it works on a read-only session."""
    rows = await repo.statuses(session)
    if not rows:
        return DEFAULT_PIPELINE
    return _in_order(
        Pipeline(tuple(StatusDef.of(row) for row in rows), tuple(await repo.transitions(session)))
    )


def _in_order(pipeline: Pipeline) -> Pipeline:
    """Statuses by their order; transitions by the order of their ends (as people read them)."""
    statuses = tuple(sorted(pipeline.statuses, key=lambda s: (s.order, s.key)))
    rank = {s.key: index for index, s in enumerate(statuses)}
    transitions = sorted(set(pipeline.transitions), key=lambda t: (rank[t[0]], rank[t[1]]))
    return Pipeline(statuses, tuple(transitions))


async def replace_pipeline(session: AsyncSession, pipeline: Pipeline) -> Pipeline:
    """Replace the whole pipeline; audited. A status some lead is in must stay (L2)."""
    validate(pipeline)
    before = await get_pipeline(session)
    keys = {s.key for s in pipeline.statuses}
    dropped = sorted(await repo.statuses_in_use(session) - keys)
    if dropped:
        raise Conflict(
            detail=f"Leads are in statuses this pipeline drops: {', '.join(dropped)}",
            extra={"statuses_in_use": dropped},
        )
    pipeline = _in_order(pipeline)
    repo.intake_settings_cache.forget_on_commit(session)
    await repo.replace_pipeline(
        session,
        [s.row() for s in pipeline.statuses],
        [{"from_key": a, "to_key": b} for a, b in pipeline.transitions],
    )
    await audit.record(
        session,
        action="leads.pipeline.replaced",
        object_type="leads.pipeline",
        object_id="default",
        before=before.as_dict(),
        after=pipeline.as_dict(),
    )
    await publish(
        session,
        type=events.PIPELINE_CHANGED,
        aggregate_type="leads.pipeline",
        aggregate_id="default",
        payload={"statuses": sorted(keys), "initial": pipeline.initial.key},
    )
    return pipeline


# -- first-response SLA per source ----------------------------------------------------------
async def sla_policies(session: AsyncSession) -> list[SlaPolicy]:
    return await repo.sla_policies(session)


async def set_first_response_time(
    session: AsyncSession, source: str, seconds: int, *, prefix: str = "path"
) -> SlaPolicy:
    """Set the first-response time of leads from `source` (`*`: every source without its own
    row; with no rows at all it is 900 s). Applies to leads taken in from now on; audited."""
    source = source.strip().lower()
    if source != DEFAULT_SLA_SOURCE and not SOURCE_PATTERN.match(source):
        raise ValidationFailed.on(f"{prefix}.source", "Not a lead source (or `*`)")
    previous = await repo.sla_policy(session, source)
    before = {"first_response_seconds": previous.first_response_seconds} if previous else None
    now = utcnow()
    repo.intake_settings_cache.forget_on_commit(session)
    await repo.upsert_sla_policy(session, source, seconds, now)
    await audit.record(
        session,
        action=events.SLA_POLICY_CHANGED,
        object_type="leads.sla_policy",
        object_id=source,
        before=before,
        after={"first_response_seconds": seconds},
    )
    await publish(
        session,
        type=events.SLA_POLICY_CHANGED,
        aggregate_type="leads.sla_policy",
        aggregate_id=source,
        payload={"source": source, "first_response_seconds": seconds},
    )
    return SlaPolicy(source=source, first_response_seconds=seconds, updated_at=now)
