"""Audit use cases: record changes (one or many), pseudonymise a data subject, search the trail.

`record` costs one INSERT in the caller's transaction (the row is added to the session and goes
out with the caller's flush), so a rollback of the change takes its audit row with it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel import context, pii
from allot.kernel.clock import utcnow
from allot.kernel.config import get_settings
from allot.kernel.errors import NotFound
from allot.kernel.ids import new_id
from allot.kernel.money import Money
from allot.kernel.pagination import PageParams

from . import repository
from .models import AuditEntry
from .repository import AuditFilter

PSEUDONYM_PREFIX = "pseud:"
REDACTED = "[redacted]"


@dataclass(frozen=True, slots=True)
class AuditEntryIn:
    """One change for `record_many`; the same fields `record` takes as keywords."""

    action: str
    object_type: str
    object_id: str | uuid.UUID
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    personal_fields: Iterable[str] = ()
    summary: str | None = None


# -- the pseudonym key ----------------------------------------------------------------------
_pseudonym_key: str | None = None


def set_pseudonym_key(key: str) -> None:
    """Called by `install(app)` with the app's secret key (tests build apps with their own)."""
    global _pseudonym_key
    _pseudonym_key = key


def _key() -> bytes:
    global _pseudonym_key
    if _pseudonym_key is None:  # outside an app (a CLI script): the configured key
        _pseudonym_key = get_settings().resolved_secret_key()
    return _pseudonym_key.encode()


def pseudonym(object_type: str, object_id: str, field: str, value: Any) -> str:
    """Stable per subject, field and value: the trail still shows whether a value changed."""
    text = value if isinstance(value, str) else _canonical(value)
    message = f"{object_type}:{object_id}:{field}:{text}".encode()
    return PSEUDONYM_PREFIX + hmac.new(_key(), message, hashlib.sha256).hexdigest()[:16]


# -- values ---------------------------------------------------------------------------------
def json_safe(value: Any) -> Any:
    """A JSON-serialisable copy: ids, instants, decimals, enums and money become strings."""
    if isinstance(value, Enum):
        return value.value if isinstance(value.value, str) else str(value.value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN and infinities are not JSON (PostgreSQL's jsonb refuses them)
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Money):
        return f"{value.major} {value.currency}"
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((json_safe(v) for v in value), key=_canonical)
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return str(value)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


_SECRET_NAMES = frozenset({"token", "authorization", "cookie", "api_key"})
_SECRET_SUFFIXES = ("_token", "_token_hash", "_token_digest", "_api_key")


def _is_secret(field: str) -> bool:
    # Credentials never belong in the trail, not even hashed: only the fact that they changed.
    name = field.lower()
    return (
        "password" in name
        or "secret" in name
        or name in _SECRET_NAMES
        or name.endswith(_SECRET_SUFFIXES)
    )


def changed_fields(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[str]:
    """Keys whose values differ, a key present on one side only included (creation, removal)."""
    before, after = before or {}, after or {}
    missing = object()
    keys = list(dict.fromkeys([*before, *after]))
    return [
        k
        for k in keys
        if before.get(k, missing) is missing
        or after.get(k, missing) is missing
        or _canonical(before[k]) != _canonical(after[k])
    ]


def _redacted(values: dict[str, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    return {k: (REDACTED if _is_secret(k) and v is not None else v) for k, v in values.items()}


# Column widths, checked here so an overlong value fails the same way on SQLite (which would
# store it) and PostgreSQL (which would refuse it).
_LIMITS = {"action": 100, "object_type": 100, "object_id": 255}


def _entry_row(entry: AuditEntryIn, now: datetime) -> dict[str, Any]:
    actor = context.current_actor()
    object_id = str(entry.object_id)
    for name, value in (("action", entry.action), ("object_type", entry.object_type),
                        ("object_id", object_id)):  # fmt: skip
        if not value or len(value) > _LIMITS[name]:
            raise ValueError(f"audit {name} must be 1..{_LIMITS[name]} characters: {value!r}")
    before, after = json_safe(entry.before), json_safe(entry.after)
    changed = changed_fields(before, after)
    personal = (
        [entry.personal_fields] if isinstance(entry.personal_fields, str) else entry.personal_fields
    )
    declared = list(dict.fromkeys(personal))
    # Well-known personal keys count even when the caller forgot to declare them.
    implicit = [
        k
        for k in dict.fromkeys([*(before or {}), *(after or {})])
        if pii.is_personal_field(k) and not _is_secret(k) and k not in declared
    ]
    return {
        "id": new_id(),
        "occurred_at": now,
        "actor_kind": actor.kind,
        "actor_id": actor.id,
        "actor_label": actor.label[:255],
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": object_id,
        "before": _redacted(before),
        "after": _redacted(after),
        "changed_fields": changed,
        "personal_fields": declared + implicit,
        "request_id": context.current_request_id(),
        "correlation_id": context.current_correlation_id(),
        "summary": entry.summary,
    }


# -- writing --------------------------------------------------------------------------------
async def record(
    session: AsyncSession,
    *,
    action: str,
    object_type: str,
    object_id: str | uuid.UUID,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    personal_fields: Iterable[str] = (),
    summary: str | None = None,
) -> uuid.UUID:
    """Append one entry to the trail in the caller's transaction; returns its id."""
    entry = AuditEntryIn(action, object_type, object_id, before, after, personal_fields, summary)
    row = _entry_row(entry, utcnow())
    repository.add(session, row)
    entry_id: uuid.UUID = row["id"]
    return entry_id


async def record_many(session: AsyncSession, entries: Iterable[AuditEntryIn]) -> int:
    """Append many entries with one bulk INSERT (imports); returns how many were written."""
    now = utcnow()
    rows = [_entry_row(entry, now) for entry in entries]
    await repository.insert_many(session, rows)
    return len(rows)


# -- erasure --------------------------------------------------------------------------------
_REWRITABLE = ("before", "after", "actor_label", "summary")


@dataclass(frozen=True, slots=True)
class _Subject:
    object_type: str
    object_id: str
    actor_id: uuid.UUID | None  # the subject as an actor, when its id is a user id

    def pseudonym(self, field: str, value: Any) -> str:
        return pseudonym(self.object_type, self.object_id, field, value)


def _is_pseudonym(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PSEUDONYM_PREFIX)


def _pseudonymise_values(
    values: dict[str, Any] | None, fields: Sequence[str], subject: _Subject, seen: dict[str, str]
) -> dict[str, Any] | None:
    """`values` with each personal field replaced; `seen` collects original text -> pseudonym."""
    if values is None:
        return None
    result = dict(values)
    for field in fields:
        value = result.get(field)
        if value is None or _is_pseudonym(value):
            continue
        result[field] = subject.pseudonym(field, value)
        texts = value if isinstance(value, list) else [value]
        seen.update({text: result[field] for text in texts if isinstance(text, str) and text})
    return result


def _pseudonymised(row: Any, subject: _Subject) -> dict[str, Any]:
    """The rewritable columns of one entry after pseudonymisation (unchanged if nothing to do)."""
    seen: dict[str, str] = {}
    before, after, label = row.before, row.after, row.actor_label
    if (row.object_type, row.object_id) == (subject.object_type, subject.object_id):
        fields = list(row.personal_fields or [])
        before = _pseudonymise_values(before, fields, subject, seen)
        after = _pseudonymise_values(after, fields, subject, seen)
    if (
        subject.actor_id is not None
        and row.actor_id == subject.actor_id
        and not _is_pseudonym(label)
    ):
        label = subject.pseudonym("actor_label", label)
        seen[row.actor_label] = label
    summary = row.summary
    if summary:
        # Longest first, so "Ivan Petrov" is replaced before a shorter "Ivan" inside it.
        for text in sorted(seen, key=len, reverse=True):
            summary = summary.replace(text, seen[text])
    return {"before": before, "after": after, "actor_label": label, "summary": summary}


async def pseudonymise_subject(
    session: AsyncSession, *, object_type: str, object_id: str | uuid.UUID
) -> int:
    """Erase a person from the trail without erasing the trail: their personal values (and, where
    they acted, their label) become stable pseudonyms. Returns how many entries changed.

    Idempotent: values already pseudonymised are left alone, so a second run changes nothing."""
    try:
        actor_id: uuid.UUID | None = uuid.UUID(str(object_id))
    except ValueError:
        actor_id = None
    subject = _Subject(object_type, str(object_id), actor_id)
    now = utcnow()
    changed = 0
    batches = repository.entries_of_subject(
        session, subject.object_type, subject.object_id, actor_id=actor_id
    )
    async for batch in batches:
        updates = []
        for row in batch:
            new = _pseudonymised(row, subject)
            if any(new[column] != getattr(row, column) for column in _REWRITABLE):
                updates.append({"id": row.id, **new, "pseudonymised_at": now})
        await repository.rewrite(session, updates)
        changed += len(updates)
    return changed


# -- reading --------------------------------------------------------------------------------
async def search(
    session: AsyncSession, filters: AuditFilter, page: PageParams
) -> tuple[Sequence[AuditEntry], str | None]:
    return await repository.search(session, filters, page)


async def get_entry(session: AsyncSession, entry_id: uuid.UUID) -> AuditEntry:
    entry = await repository.get(session, entry_id)
    if entry is None:
        raise NotFound(detail="No such audit entry")
    return entry
