"""Queues as the engine reads them: detached, cached rules (every submission needs them).

Part of routing's repository, kept apart because it is a cache with its own staleness rule.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts.routing.models import Queue
from allot.kernel.cache import ShortLivedCache


@dataclass(frozen=True, slots=True)
class QueueRules:
    """What the engine needs of a queue, detached from any session (safe to cache)."""

    id: uuid.UUID
    name: str
    work_kinds: tuple[str, ...]
    strategy: str
    scorer: str | None
    offer_mode: str
    offer_timeout_seconds: int
    broadcast_size: int
    first_response_seconds: int | None
    priority: int
    is_active: bool
    # A derived queue (rules' `require`): its base queue and the agent expression it adds.
    base_queue_id: uuid.UUID | None = None
    require: str = ""

    @classmethod
    def of(cls, queue: Queue) -> QueueRules:
        return cls(
            id=queue.id, name=queue.name, work_kinds=tuple(queue.work_kinds or ()),
            strategy=queue.strategy, scorer=queue.scorer, offer_mode=queue.offer_mode,
            offer_timeout_seconds=queue.offer_timeout_seconds,
            broadcast_size=queue.broadcast_size,
            first_response_seconds=queue.first_response_seconds, priority=queue.priority,
            is_active=queue.is_active, base_queue_id=queue.base_queue_id,
            require=queue.require_expression or "",
        )  # fmt: skip


# Queues change rarely and every submission needs them: they are cached per process. A change
# made here clears the cache on commit; other processes see it within QUEUE_CACHE_SECONDS.
QUEUE_CACHE_SECONDS = 2.0
_queue_cache: ShortLivedCache[tuple[QueueRules, ...]] = ShortLivedCache(
    "routing.queues", QUEUE_CACHE_SECONDS
)


def forget_queues_on_commit(session: AsyncSession) -> None:
    _queue_cache.forget_on_commit(session)


async def active_queues(session: AsyncSession) -> tuple[QueueRules, ...]:
    queues = _queue_cache.get("active")
    if queues is None:
        rows = (
            await session.execute(
                select(Queue)
                .where(Queue.is_active.is_(True))
                .order_by(Queue.priority.desc(), Queue.created_at)
            )
        ).scalars()
        queues = tuple(QueueRules.of(queue) for queue in rows)
        _queue_cache.put("active", queues)
    return queues


async def queue_for_kind(session: AsyncSession, kind: str) -> QueueRules | None:
    """The highest-priority active queue serving `kind`: where an item goes that no rule takes."""
    for queue in await active_queues(session):
        if kind in queue.work_kinds and queue.base_queue_id is None:
            return queue
    return None


async def queue_by_name(session: AsyncSession, name: str) -> QueueRules | None:
    """An active queue by name (rules name their queues, so they read well and survive export);
    derived queues are not named by rules (they are a queue plus a `require`)."""
    for queue in await active_queues(session):
        if queue.name == name and queue.base_queue_id is None:
            return queue
    return None


async def derived_queue(
    session: AsyncSession, base_id: uuid.UUID, require: str
) -> QueueRules | None:
    """The active queue of `base_id`'s members who satisfy `require` (rules.py), if set up."""
    for queue in await active_queues(session):
        if queue.base_queue_id == base_id and queue.require == require:
            return queue
    return None


async def queue_rules(session: AsyncSession, queue_id: uuid.UUID) -> QueueRules | None:
    for rules in await active_queues(session):
        if rules.id == queue_id:
            return rules
    stored = await session.get(Queue, queue_id)
    return QueueRules.of(stored) if stored is not None else None
