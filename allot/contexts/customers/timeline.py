"""A customer's timeline: what happened to them (leads, notes, status changes, card changes).

An entry stores its title as an English msgid and the placeholders as `data`; `entry_title`
translates at display time, so the same entry reads in Russian to one user and in English to
another.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel import pii
from allot.kernel.clock import utcnow
from allot.kernel.errors import NotFound, ValidationFailed
from allot.kernel.i18n import gettext

from . import repository

KIND_MAX_LENGTH = 100
REFERENCE_MAX_LENGTH = 255
ERASED_VALUE = "[erased]"
# Free text another context copies into an entry (a note's excerpt) may name anyone.
FREE_TEXT_KEYS = frozenset({"excerpt", "text", "comment", "note", "body", "message"})


async def add_timeline_entry(
    session: AsyncSession,
    customer_id: uuid.UUID,
    *,
    kind: str,
    title: str,
    reference: str | None = None,
    data: dict[str, Any] | None = None,
    occurred_at: datetime | None = None,
    known_current: bool = False,
) -> None:
    """Append an entry to the card `customer_id` stands for (a merged card's survivor).
    `known_current`: the caller knows the card is not merged (it has just created it)."""
    target = customer_id if known_current else await repository.resolve_merged(session, customer_id)
    if target is None:
        raise NotFound(detail="No such customer")
    if not kind or len(kind) > KIND_MAX_LENGTH:
        raise ValidationFailed.on("kind", f"1 to {KIND_MAX_LENGTH} characters")
    if not title:
        raise ValidationFailed.on("title", "Give a title (an English msgid)")
    if reference is not None and len(reference) > REFERENCE_MAX_LENGTH:
        raise ValidationFailed.on("reference", f"At most {REFERENCE_MAX_LENGTH} characters")
    repository.add_timeline_entry(
        session,
        {
            "customer_id": target,
            "occurred_at": occurred_at or utcnow(),
            "kind": kind,
            "title": title,
            "reference": reference,
            "data": dict(data or {}),
        },
    )


def entry_title(title: str, data: Mapping[str, Any]) -> str:
    """The title in the current locale, its placeholders filled from `data`."""
    text = gettext(title)
    if "%(" not in text:
        return text
    try:
        return text % {k: ("—" if v is None else v) for k, v in data.items()}
    except (KeyError, TypeError, ValueError):  # an entry written before its msgid changed
        return text


def _is_personal(key: str) -> bool:
    return key in FREE_TEXT_KEYS or pii.is_personal_field(key)


def erased_data(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """`data` with personal values replaced, or None if it holds none."""
    if not any(_is_personal(k) and v not in (None, "", ERASED_VALUE) for k, v in data.items()):
        return None
    return {k: (ERASED_VALUE if _is_personal(k) and v is not None else v) for k, v in data.items()}
