"""Sliding-window rate limiting behind a small protocol, so a Redis implementation can replace the
in-memory one when the app runs in several processes.

Callers decide what counts as an attempt: `retry_after` asks whether a key is currently blocked
(without counting), `hit` records one attempt, `reset` forgets a key (e.g. after a good login).
Time comes from the kernel clock, so tests move a ManualClock instead of sleeping.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

from allot.kernel.clock import utcnow


class RateLimiter(Protocol):
    async def retry_after(self, key: str, *, limit: int, window_seconds: float) -> int | None:
        """Seconds until `key` may try again, or None if it is under `limit` in the window."""
        ...

    async def hit(self, key: str, *, window_seconds: float) -> None: ...

    async def reset(self, key: str) -> None: ...


class InMemoryRateLimiter:
    """One process's memory: attempt times per key, pruned as the window slides.

    No lock: nothing below awaits, so each call runs to completion on the event loop.
    """

    # Sweep keys nobody touched for a while every this many hits, so memory stays bounded.
    SWEEP_EVERY = 1000

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}
        self._windows: dict[str, float] = {}
        self._since_sweep = 0

    @staticmethod
    def _now() -> float:
        return utcnow().timestamp()

    def _prune(self, key: str, now: float, window_seconds: float) -> deque[float]:
        hits = self._hits.get(key)
        if hits is None:
            return deque()
        while hits and hits[0] <= now - window_seconds:
            hits.popleft()
        if not hits:
            self._hits.pop(key, None)
            self._windows.pop(key, None)
        return hits

    async def retry_after(self, key: str, *, limit: int, window_seconds: float) -> int | None:
        now = self._now()
        hits = self._prune(key, now, window_seconds)
        if len(hits) < limit:
            return None
        # The attempt whose expiry unblocks the key is the one `limit` places from the newest.
        unblocking = hits[len(hits) - limit]
        return max(1, math.ceil(unblocking + window_seconds - now))

    async def hit(self, key: str, *, window_seconds: float) -> None:
        now = self._now()
        self._prune(key, now, window_seconds)
        self._hits.setdefault(key, deque()).append(now)
        self._windows[key] = window_seconds
        self._since_sweep += 1
        if self._since_sweep >= self.SWEEP_EVERY:
            self._since_sweep = 0
            for stale in list(self._hits):
                self._prune(stale, now, self._windows.get(stale, 0.0))

    async def reset(self, key: str) -> None:
        self._hits.pop(key, None)
        self._windows.pop(key, None)

    def tracked_keys(self) -> int:
        return len(self._hits)
