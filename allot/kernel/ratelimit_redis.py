"""Rate limits shared by every process through Redis, and the choice of implementation.

With several API replicas an in-memory count is per replica: an attacker guessing passwords
would get N times the attempts, and an API client N times its rate. With `redis_url` set, the
counts live in Redis, updated atomically (one Lua script or one MULTI per call: one round trip).
Time is sent from the kernel clock rather than taken from Redis's own: tests move a ManualClock,
and replicas' clocks are kept by NTP (a skew of a few ms shifts a window by as much).

When Redis is unreachable each limiter falls back to its process's in-memory one (and the
`Breaker` skips Redis for a moment, so an outage costs no timeout per request). Neither limit
fails open (an outage must not switch brute-force protection off) nor closed (nobody could sign
in or call the API while Redis is down): during an outage a limit holds per process, so across N
replicas a client gets at most N times its allowance. docs/redis.md, "When Redis is down".
"""

from __future__ import annotations

import math
import uuid
from typing import TYPE_CHECKING

from allot.kernel import redis as kredis
from allot.kernel.clock import utcnow
from allot.kernel.ratelimit import (
    InMemoryRateLimiter,
    InMemoryRequestLimiter,
    Rate,
    RateLimiter,
    RequestLimiter,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from allot.kernel.config import Settings

# Sliding window over a sorted set (member: one attempt, score: its time). Prunes what left the
# window, then answers like InMemoryRateLimiter.retry_after: blocked until the attempt `limit`
# places from the newest leaves the window.
_RETRY_AFTER = """
local cutoff = tonumber(ARGV[1]) - tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
local count = redis.call('ZCARD', KEYS[1])
local limit = tonumber(ARGV[2])
if count < limit then return false end
local unblocking = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
return tostring(tonumber(unblocking[2]) + tonumber(ARGV[3]) - tonumber(ARGV[1]))
"""

# GCRA, as InMemoryRequestLimiter.acquire_now: the key holds the next theoretical arrival time
# and expires when it has passed (a key at rest costs nothing).
_ACQUIRE = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local new_tat = tat + interval
local allowed_at = new_tat - window
if now < allowed_at then return tostring(allowed_at - now) end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1)
return false
"""


def _now() -> float:
    return utcnow().timestamp()


class RedisRateLimiter:
    """`RateLimiter` over one sorted set per key (`<ns>:ratelimit:<key>`, expiring with its
    window): the sign-in limit, shared by all processes."""

    def __init__(
        self,
        redis: Redis,
        namespace: str,
        fallback: RateLimiter | None = None,
        breaker: kredis.Breaker | None = None,
    ) -> None:
        self.redis = redis
        self._key = kredis.keys(namespace)
        self.fallback = fallback or InMemoryRateLimiter()
        self.breaker = breaker or kredis.Breaker("login rate limit")
        self._retry_after = redis.register_script(_RETRY_AFTER)

    def key(self, key: str) -> str:
        return self._key("ratelimit", key)

    async def retry_after(self, key: str, *, limit: int, window_seconds: float) -> int | None:
        if self.breaker.closed:
            try:
                wait = await self._retry_after(
                    keys=[self.key(key)], args=[repr(_now()), limit, repr(float(window_seconds))]
                )
                self.breaker.succeeded()
            except kredis.UNAVAILABLE as exc:
                self.breaker.failed(exc)
            else:
                return None if wait is None else max(1, math.ceil(float(wait)))
        return await self.fallback.retry_after(key, limit=limit, window_seconds=window_seconds)

    async def hit(self, key: str, *, window_seconds: float) -> None:
        now = _now()
        if self.breaker.closed:
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    name = self.key(key)
                    pipe.zremrangebyscore(name, "-inf", now - window_seconds)
                    pipe.zadd(name, {f"{now!r}:{uuid.uuid4().hex[:12]}": now})
                    pipe.pexpire(name, math.ceil(window_seconds * 1000))
                    await pipe.execute()
                self.breaker.succeeded()
                return
            except kredis.UNAVAILABLE as exc:
                self.breaker.failed(exc)
        await self.fallback.hit(key, window_seconds=window_seconds)

    async def reset(self, key: str) -> None:
        await self.fallback.reset(key)
        if self.breaker.closed:
            try:
                await self.redis.delete(self.key(key))
                self.breaker.succeeded()
            except kredis.UNAVAILABLE as exc:
                self.breaker.failed(exc)


class RedisRequestLimiter:
    """`RequestLimiter` with one Redis string per key (`<ns>:rate:<key>`): one EVALSHA, one
    round trip per request. The alternative, a local bucket that syncs with Redis in batches,
    costs no round trip but lets each replica overshoot by its batch; at the rates an API limit
    is about, the round trip (figures in docs/redis.md) was judged the better price."""

    def __init__(
        self,
        redis: Redis,
        namespace: str,
        fallback: InMemoryRequestLimiter | None = None,
        breaker: kredis.Breaker | None = None,
    ) -> None:
        self.redis = redis
        self._prefix = kredis.keys(namespace)("rate", "")
        self.fallback = fallback or InMemoryRequestLimiter()
        self.breaker = breaker or kredis.Breaker("API rate limit")
        self._acquire = redis.register_script(_ACQUIRE)

    async def acquire(self, key: str, rate: Rate) -> float | None:
        now = _now()
        if self.breaker.closed:
            try:
                wait = await self._acquire(
                    keys=[self._prefix + key],
                    args=[repr(now), repr(rate.interval), repr(rate.window_seconds)],
                )
                self.breaker.succeeded()
            except kredis.UNAVAILABLE as exc:
                self.breaker.failed(exc)
            else:
                return None if wait is None else float(wait)
        return self.fallback.acquire_now(key, rate, now)


def login_limiter(settings: Settings, redis: Redis | None) -> RateLimiter:
    """The sign-in limiter: shared through `redis` (the app's client) when there is one."""
    if redis is None:
        return InMemoryRateLimiter()
    return RedisRateLimiter(redis, settings.redis_namespace)


def request_limiter(settings: Settings, redis: Redis | None) -> RequestLimiter:
    if redis is None:
        return InMemoryRequestLimiter()
    return RedisRequestLimiter(redis, settings.redis_namespace)
