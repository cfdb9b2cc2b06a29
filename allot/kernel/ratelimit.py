"""Sliding-window rate limiting behind a small protocol, so a Redis implementation can replace the
in-memory one when the app runs in several processes.

Callers decide what counts as an attempt: `retry_after` asks whether a key is currently blocked
(without counting), `hit` records one attempt, `reset` forgets a key (e.g. after a good login).
Time comes from the kernel clock, so tests move a ManualClock instead of sleeping.

Two shapes of limit live here. `RateLimiter` counts attempts in a sliding window (sign-in: a
handful of failures per several minutes, exact). `RequestLimiter` throttles request rates on
every API call (thousands per minute, where the cost per request matters more than the shape of
the window). Their Redis implementations, shared by all processes, are in `ratelimit_redis`;
`login_limiter` / `request_limiter` there choose by `settings.redis_url`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
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


# -- request rates (the API limit) -----------------------------------------------------------
_UNITS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


@dataclass(frozen=True, slots=True)
class Rate:
    """`limit` requests per `window_seconds`; a burst of `limit` is allowed, then one request
    per `interval` (the window spread evenly)."""

    limit: int
    window_seconds: float

    @property
    def interval(self) -> float:
        return self.window_seconds / self.limit

    @classmethod
    def parse(cls, text: str) -> Rate | None:
        """ "6000/minute", "100/second", "50000/hour"; empty or "0" (or 0/anything): no limit."""
        text = text.strip().lower()
        if text in ("", "0", "off"):
            return None
        count, _, unit = text.partition("/")
        try:
            limit = int(count)
        except ValueError:
            raise ValueError(f"Not a rate: {text!r} (e.g. 6000/minute)") from None
        window = _UNITS.get(unit.strip().removesuffix("s") or "second")
        if window is None or limit < 0:
            raise ValueError(f"Not a rate: {text!r} (units: {', '.join(_UNITS)})")
        return cls(limit, window) if limit else None


class RequestLimiter(Protocol):
    async def acquire(self, key: str, rate: Rate) -> float | None:
        """Count one request of `key`: None if it may go ahead, else the seconds until one may
        (a refused request is not counted)."""
        ...


class InMemoryRequestLimiter:
    """GCRA (the "generic cell rate algorithm", a leaky bucket kept as one number per key): each
    key stores the theoretical arrival time `tat` of its next request; a request is allowed while
    `tat` is at most one window ahead of now. O(1) time and one float per key, so it can sit on
    every API request (about a microsecond; see docs/redis.md for the figures).

    No lock: nothing awaits between reading and writing a key's time."""

    SWEEP_EVERY = 10_000  # keys whose time has passed hold nothing: drop them now and then

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}
        self._since_sweep = 0

    async def acquire(self, key: str, rate: Rate) -> float | None:
        return self.acquire_now(key, rate, utcnow().timestamp())

    def acquire_now(self, key: str, rate: Rate, now: float) -> float | None:
        tat = self._tat.get(key, now)
        if tat < now:
            tat = now
        new_tat = tat + rate.interval
        allowed_at = new_tat - rate.window_seconds
        if now < allowed_at:
            return allowed_at - now
        self._tat[key] = new_tat
        self._since_sweep += 1
        if self._since_sweep >= self.SWEEP_EVERY:
            self._since_sweep = 0
            for stale in [k for k, t in self._tat.items() if t <= now]:
                del self._tat[stale]
        return None

    def tracked_keys(self) -> int:
        return len(self._tat)


def retry_after_header(seconds: float) -> int:
    """Whole seconds for `Retry-After`, never 0 (a client told 0 retries at once, and fails)."""
    return max(1, math.ceil(seconds))
