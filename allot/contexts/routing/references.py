"""What a work item's reference stands for, in words an operator can act on.

Routing places items by an opaque `reference` (`lead:<uuid>`, `request:<uuid>`, ...) and knows
nothing of leads or requests. The context that owns a kind of record registers a describer for
its prefix in its `install(app)`:

    routing.register_reference_describer("lead", describe_leads)

A describer takes every reference with that prefix on a page at once and returns a summary for
each one it knows (one batch per prefix, so a page costs the same queries for 1 offer or 50).
References without a describer, or that their describer does not know (a deleted record), are
shown as they are.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True, slots=True)
class ReferenceSummary:
    """What the inbox shows for one referenced record. Text fields are ready to show (translated
    and formatted by the describer), except `phone` (E.164; the template's `phone` filter formats
    it) and the instants (shown in the business time zone)."""

    title: str  # who or what: the customer's name
    link: str | None = None  # the record's page
    phone: str | None = None
    product: str | None = None  # what is asked for: "150 000 ₽ · 12 months"
    source: str | None = None  # where it came from
    priority: int | None = None
    created_at: datetime | None = None  # the record's age runs from here
    due_at: datetime | None = None  # the record's own response deadline (SLA), if any


Describer = Callable[[AsyncSession, Sequence[str]], Awaitable[dict[str, ReferenceSummary]]]

_describers: dict[str, Describer] = {}


def register_reference_describer(prefix: str, describer: Describer) -> None:
    """`describer(session, references)` summarizes references `<prefix>:...`; registering a
    prefix again replaces its describer (each app start installs the contexts anew)."""
    _describers[prefix.rstrip(":")] = describer


def prefix_of(reference: str) -> str:
    return reference.partition(":")[0]


async def describe_references(
    session: AsyncSession, references: Iterable[str]
) -> dict[str, ReferenceSummary]:
    """Summaries of the references some describer knows: one describer call per prefix."""
    by_prefix: dict[str, list[str]] = defaultdict(list)
    for reference in dict.fromkeys(references):  # unique, in order
        by_prefix[prefix_of(reference)].append(reference)
    summaries: dict[str, ReferenceSummary] = {}
    for prefix, group in by_prefix.items():
        describer = _describers.get(prefix)
        if describer is None:
            continue
        found = await describer(session, group)
        summaries.update({ref: found[ref] for ref in group if ref in found})
    return summaries
