"""Redis for a scaled-out Allot: one client per process, every key under one namespace, and a
breaker that keeps an outage from costing each request a timeout.

What Redis holds (presence beats, rate-limit counters, the live-update channel) is described in
docs/redis.md. None of it is the record of anything: the database is. So every user of Redis has
a way to carry on without it, and this module gives them the same two tools:

- `client(url, timeout)`: the process's client for a URL (`app_client(app)`: the app's).
  Sockets time out after `timeout` seconds and a failed command is NOT retried by the driver
  (redis-py retries ten times with backoff by default: seconds of waiting on a request's
  path). One client per event loop: a connection belongs to the loop that opened it, and tests
  run each test in a loop of its own.
- `Breaker`: after a failure, callers skip Redis for `pause_seconds` and use their fallback; the
  outage and the recovery are logged once each, not once per request.

Keys are `<namespace>:<use>:...` (`keys(namespace)`), so several deployments, or the tests
(`service_namespace`), share one Redis without seeing each other's data.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from allot.kernel.logging import get_logger

log = get_logger(__name__)

# What a Redis call raises when Redis is unreachable, slow or refuses: catch these, nothing wider.
UNAVAILABLE: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)

_clients: dict[tuple[str, float], tuple[weakref.ref[asyncio.AbstractEventLoop], Redis]] = {}


def connect(url: str, timeout: float | None) -> Redis:
    """A new client (its own connection pool); most code wants `client` instead."""
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )


def client(url: str, timeout: float) -> Redis:
    """The running loop's shared client for `url` (created on first use)."""
    loop = asyncio.get_running_loop()
    key = (url, timeout)
    entry = _clients.get(key)
    if entry is not None and entry[0]() is loop:
        return entry[1]
    redis = connect(url, timeout)
    _clients[key] = (weakref.ref(loop), redis)
    return redis


def app_client(app: Any) -> Redis | None:
    """The app's client (`app.state.redis`, made on first call), or None without `redis_url`.
    One app serves one event loop, so its client can be shared by everything the app holds."""
    existing: Redis | None = getattr(app.state, "redis", None)
    settings = app.state.settings
    if existing is None and settings.redis_url:
        existing = app.state.redis = connect(settings.redis_url, settings.redis_timeout_seconds)
    return existing


def keys(namespace: str) -> Callable[..., str]:
    """`keys("allot")("ratelimit", "login:ip:1.2.3.4")` -> "allot:ratelimit:login:ip:1.2.3.4"."""
    prefix = namespace.rstrip(":")

    def key(*parts: str) -> str:
        return ":".join((prefix, *parts))

    return key


class Breaker:
    """Whether to try Redis now: closed normally; after a failure, open for `pause_seconds`
    (callers use their fallback at no cost), then the next call tries Redis again.

    Monotonic time, not the business clock: this is about the network, and a test that moves a
    ManualClock by an hour must not reopen Redis by accident."""

    def __init__(self, use: str, pause_seconds: float = 2.0) -> None:
        self.use = use
        self.pause_seconds = pause_seconds
        self._open_until = 0.0
        self._down = False
        self.failures = 0

    @property
    def closed(self) -> bool:
        return not self._down or time.monotonic() >= self._open_until

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        self._open_until = time.monotonic() + self.pause_seconds
        if not self._down:
            self._down = True
            log.warning("redis unavailable; using the fallback", use=self.use,
                        error=type(exc).__name__)  # fmt: skip

    def succeeded(self) -> None:
        if self._down:
            self._down = False
            log.info("redis available again", use=self.use)

    def reset(self) -> None:
        """Try Redis on the next call (tests, after they restored the connection)."""
        self._open_until = 0.0
