"""Presence heartbeats: where "this member was last seen" is kept.

A browser beats every minute or so for each signed-in agent. Written to the database, each beat
is a write transaction (on SQLite, a turn of the only writer) that changes nothing anyone reads
until the beats stop. So a store sits in between:

- `DatabasePresence` (no `redis_url`, the default): keeps nothing. `beat` answers None, meaning
  "write it yourself": the caller stores the time on its row, as Allot always has.
- `RedisPresence`: one sorted set per group of members (`<ns>:presence:<group>`, member -> time
  of the last beat). A beat is one `ZADD GT` (never moves a time backwards, whichever replica's
  beat arrives last) and no database write at all; whoever decides presence (routing's presence
  timer) reads the time back with `last_beat`.

Redis being down never makes anyone absent: `beat` answers None (the caller falls back to the
database write, as without Redis) and `last_beat` raises `PresenceUnavailable` (the caller must
not conclude the member is gone). Status changes are not kept here: they are business facts,
written to the database with their events and audit by the context that owns them.

The process has one store, built from the settings on first use (`presence_store()`), whatever
its role (API, worker, timers); tests swap it with `set_presence_store`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from allot.kernel import redis as kredis
from allot.kernel.config import get_settings


class PresenceUnavailable(Exception):
    """The store cannot say when the member was last seen (Redis unreachable)."""


class PresenceStore(Protocol):
    async def beat(self, group: str, member: str, at: datetime) -> bool | None:
        """Record a beat. None: not recorded here, the caller writes its own row; True: the
        first beat this store knows of for the member; False: a later one."""
        ...

    async def last_beat(self, group: str, member: str) -> datetime | None:
        """The member's last recorded beat (None: none recorded); raises PresenceUnavailable."""
        ...

    async def forget(self, group: str, member: str) -> None: ...


class DatabasePresence:
    """The database is the store: beats are written by the caller onto its own rows."""

    async def beat(self, group: str, member: str, at: datetime) -> bool | None:
        return None

    async def last_beat(self, group: str, member: str) -> datetime | None:
        return None

    async def forget(self, group: str, member: str) -> None:
        return None


class RedisPresence:
    def __init__(self, url: str, namespace: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._key = kredis.keys(namespace)
        self.breaker = kredis.Breaker("presence")

    def key(self, group: str) -> str:
        return self._key("presence", group)

    async def beat(self, group: str, member: str, at: datetime) -> bool | None:
        if not self.breaker.closed:
            return None
        try:
            redis = kredis.client(self.url, self.timeout)
            added = await redis.zadd(self.key(group), {member: at.timestamp()}, gt=True)
        except kredis.UNAVAILABLE as exc:
            self.breaker.failed(exc)
            return None
        self.breaker.succeeded()
        return bool(added)

    async def last_beat(self, group: str, member: str) -> datetime | None:
        try:
            redis = kredis.client(self.url, self.timeout)
            score = await redis.zscore(self.key(group), member)
        except kredis.UNAVAILABLE as exc:
            self.breaker.failed(exc)
            raise PresenceUnavailable(str(exc)) from exc
        self.breaker.succeeded()
        return None if score is None else datetime.fromtimestamp(float(score), UTC)

    async def forget(self, group: str, member: str) -> None:
        try:
            await kredis.client(self.url, self.timeout).zrem(self.key(group), member)
        except kredis.UNAVAILABLE as exc:
            self.breaker.failed(exc)  # a stale member only costs one set entry


_store: PresenceStore | None = None


def presence_store() -> PresenceStore:
    global _store
    if _store is None:
        settings = get_settings()
        _store = (
            RedisPresence(
                settings.redis_url, settings.redis_namespace, settings.redis_timeout_seconds
            )
            if settings.redis_url
            else DatabasePresence()
        )
    return _store


def set_presence_store(store: PresenceStore | None) -> PresenceStore | None:
    """Swap the process's store (None: rebuild from the settings); returns the previous one."""
    global _store
    previous, _store = _store, store
    return previous
