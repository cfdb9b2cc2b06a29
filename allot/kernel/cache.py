"""Per-process, short-lived memory of rarely changing configuration read on every request.

Queues, the lead pipeline's first status and SLA, and who a bearer token belongs to are read by
every intake; re-reading them costs more than the intake's own work. A `ShortLivedCache` keeps
values for `ttl_seconds` at most. A change made in this process forgets the cache when its
transaction commits (`forget_on_commit`); other processes see it within `ttl_seconds`, which is
the staleness each user of this module accepts and documents.

Every cache registers itself, so `forget_all_caches()` empties them all: a new `Database` in the
process (tests, the CLI) starts without values read from another one.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Hashable
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

V = TypeVar("V")

_registry: weakref.WeakSet[ShortLivedCache[object]] = weakref.WeakSet()


class ShortLivedCache(Generic[V]):
    def __init__(self, name: str, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self.name = name
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._entries: dict[Hashable, tuple[float, V]] = {}
        _registry.add(self)  # type: ignore[arg-type]

    def get(self, key: Hashable) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._entries.pop(key, None)
            return None
        return entry[1]

    def put(self, key: Hashable, value: V) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # bounded without bookkeeping; a full cache is the odd case
        self._entries[key] = (time.monotonic() + self.ttl_seconds, value)

    def forget(self) -> None:
        self._entries.clear()

    def forget_on_commit(self, session: AsyncSession | Session) -> None:
        """Forget now (this transaction reads the new values) and again after the commit
        (nothing read meanwhile outlives the change)."""
        from allot.kernel.db.engine import on_commit

        self.forget()
        on_commit(session, self.forget)


def forget_all_caches() -> None:
    for cache in list(_registry):
        cache.forget()
