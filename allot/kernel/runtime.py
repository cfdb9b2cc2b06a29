"""Process roles: which background services a process runs, composed in one place.

| role     | single-process mode (no broker_url)    | broker mode (broker_url set)          |
|----------|----------------------------------------|---------------------------------------|
| `serve`  | Dispatcher + TimerRunner +             | Relay + BrokerWorker(every group) +   |
|          | DeliveryRunner (+ SQLite WAL           | TimerRunner + DeliveryRunner, and the |
|          | checkpoints), and the HTTP app         | HTTP app                              |
| `api`    | nothing in the background              | nothing in the background             |
| `worker` | Dispatcher + DeliveryRunner            | BrokerWorker(the chosen groups) +     |
|          | (PostgreSQL only)                      | DeliveryRunner, and with redis_url a  |
|          |                                        | live-update hub                       |
| `relay`  | refused: nothing to relay to           | Relay                                 |
| `timers` | TimerRunner                            | TimerRunner                           |

Why any number of replicas of a role is safe, service by service:
- Dispatcher: outbox claims are one `UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)`
  lease each, and every durable consumer records `(consumer, event id)` in the inbox in its own
  unit of work: two dispatchers never apply one effect twice.
- TimerRunner: firing is `UPDATE kernel_timers SET status='fired' WHERE id=? AND
  status='pending'` in the same transaction as the handler's effect. On PostgreSQL (READ
  COMMITTED) a second runner's UPDATE waits on the first one's row lock and then re-checks the
  WHERE clause: after a commit it matches nothing (rowcount 0, skipped); after a rollback it
  fires the timer itself. So each timer fires exactly once whatever the number of runners.
- Relay and BrokerWorker keep their own guarantees (see `allot.kernel.events.broker`).
- DeliveryRunner: a claim is one `UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)`
  that makes the rows `sending` and moves their due time to the end of a lease, so no other
  runner takes them meanwhile; a delivered row is never claimed again. Messages go out at least
  once: only a runner dying between the provider's acceptance and its mark repeats one
  (docs/deliveries.md). Every worker runs one, whatever its consumer groups.

`stop()` drains: every service finishes the unit of work it is in (a claimed batch, a fired
timer, an in-flight publish) and commits it before returning; nothing is abandoned half-done.

The split roles need PostgreSQL: SQLite has one writer, and one process serves it best (`serve`).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sqlalchemy.engine import make_url

from allot.kernel.config import Settings
from allot.kernel.db.checkpoint import WalCheckpointer
from allot.kernel.db.engine import Database
from allot.kernel.delivery.runner import DeliveryRunner
from allot.kernel.events.dispatcher import Dispatcher
from allot.kernel.events.registry import registry
from allot.kernel.logging import get_logger
from allot.kernel.timers import TimerRunner

log = get_logger(__name__)

Role = Literal["serve", "api", "worker", "relay", "timers"]
ROLES: tuple[Role, ...] = ("serve", "api", "worker", "relay", "timers")


class RoleRefused(Exception):
    """This process cannot run this role with this configuration; the message says why."""


class Service(Protocol):
    # start()/stop() may be plain or async methods (Dispatcher.start is plain, Relay.start is
    # async): `BackgroundServices` awaits whatever they return.
    def start(self) -> Any: ...

    def stop(self) -> Any: ...


@dataclass
class BackgroundServices:
    """The services of one process, started in order and stopped in reverse order."""

    role: Role
    services: list[tuple[str, Service]] = field(default_factory=list)
    groups: tuple[str, ...] | None = None
    _started: list[tuple[str, Service]] = field(default_factory=list, repr=False)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.services]

    def get(self, name: str) -> Any | None:
        return next((service for n, service in self.services if n == name), None)

    async def start(self) -> None:
        """Start every service; if one fails, stop those already running and re-raise."""
        for name, service in self.services:
            try:
                await _maybe_await(service.start())
            except BaseException:
                log.exception("background service failed to start", service=name)
                await self.stop()
                raise
            self._started.append((name, service))

    async def stop(self) -> None:
        """Stop (drain) every started service, the last started first. One that fails to stop
        is logged and the others still stop: a half-stopped process would hang its shutdown."""
        while self._started:
            name, service = self._started.pop()
            try:
                await _maybe_await(service.stop())
            except Exception:
                log.exception("background service failed to stop cleanly", service=name)


class WorkerLiveHub:
    """A worker's Redis hub: the live-update consumers it runs publish through it to the API
    replicas, which hand the messages to their browsers (kernel/web/live_redis.py)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.hub: Any = None

    def start(self) -> None:
        from allot.kernel.web.live import set_process_hub
        from allot.kernel.web.live_redis import RedisHub

        self.hub = RedisHub(self.settings.redis_url, self.settings.redis_namespace)
        self.hub.start()
        set_process_hub(self.hub)

    def stop(self) -> None:
        from allot.kernel.web.live import process_hub, set_process_hub

        if self.hub is not None:
            if process_hub() is self.hub:
                set_process_hub(None)
            self.hub.close()


async def _maybe_await(result: Any) -> None:
    if inspect.isawaitable(result):
        await result


def known_groups() -> dict[str, list[str]]:
    """Consumer group -> the consumer names in it (a group is a consumer name before its
    first "."). Broker mode's own grouping when it is installed, so the two never disagree."""
    try:
        from allot.kernel.events.broker import consumer_groups
    except ImportError:  # broker mode not installed: the same rule, from the registry
        groups: dict[str, list[str]] = {}
        for consumer in registry.all():
            groups.setdefault(consumer.name.split(".", 1)[0], []).append(consumer.name)
        return {group: sorted(names) for group, names in sorted(groups.items())}
    return {
        group: sorted(consumer.name for consumer in consumers)
        for group, consumers in sorted(consumer_groups().items())
    }


def check_groups(groups: Iterable[str]) -> tuple[str, ...]:
    """The requested groups, each a known one (else `RoleRefused` listing the known ones)."""
    wanted = tuple(dict.fromkeys(g.strip() for g in groups if g.strip()))
    if not wanted:
        raise RoleRefused("--consumers names no consumer group")
    known = known_groups()
    unknown = [g for g in wanted if g not in known]
    if unknown:
        raise RoleRefused(
            f"unknown consumer group(s): {', '.join(unknown)}; "
            f"known groups: {', '.join(known) or 'none'}"
        )
    return wanted


def check_role(
    role: Role, settings: Settings, *, groups: Sequence[str] | None = None
) -> tuple[str, ...] | None:
    """Refuse (`RoleRefused`, saying why) a role this configuration cannot run; returns the
    checked consumer groups (None: every group)."""
    broker = bool(settings.broker_url)
    is_sqlite = make_url(settings.resolved_database_url).get_backend_name() == "sqlite"
    if role == "relay" and not broker:
        raise RoleRefused(
            "`allot relay` publishes the outbox to RabbitMQ: set ALLOT_BROKER_URL "
            "(without a broker, `allot worker` dispatches the outbox itself)"
        )
    if role != "serve" and is_sqlite:
        raise RoleRefused(
            f"`allot {role}` needs PostgreSQL: SQLite has one writer, so one process serves it "
            "(`allot serve`, which runs the API, events and timers together)"
        )
    if groups is not None and role != "worker":
        raise RoleRefused("consumer groups are chosen for `allot worker` only")
    if groups is None:
        return None
    if not broker:
        raise RoleRefused(
            "--consumers needs broker mode (ALLOT_BROKER_URL): without a broker an outbox "
            "event is marked dispatched once for all its consumers, so every worker runs "
            "every consumer"
        )
    return check_groups(groups)


def compose(
    role: Role,
    database: Database,
    settings: Settings,
    *,
    groups: Sequence[str] | None = None,
) -> BackgroundServices:
    """The background services `role` runs (see the module docstring), not started yet."""
    chosen = check_role(role, settings, groups=groups)
    broker = bool(settings.broker_url)
    composed = BackgroundServices(role, groups=chosen)
    add = composed.services.append
    if role == "serve" and database.is_sqlite:
        add(("wal-checkpointer", WalCheckpointer(database)))
    if role == "worker" and settings.redis_url:
        add(("live-hub", WorkerLiveHub(settings)))
    if role in ("serve", "worker"):
        if broker:
            from allot.kernel.events.broker import BrokerWorker

            add(("broker-worker", BrokerWorker(database, settings, groups=chosen)))
        else:
            add(("dispatcher", Dispatcher(database)))
        add(("deliveries", DeliveryRunner.from_settings(database, settings)))
    if role in ("serve", "relay") and broker:
        from allot.kernel.events.broker import Relay

        add(("relay", Relay(database, settings)))
    if role in ("serve", "timers"):
        add(("timers", TimerRunner(database)))
    return composed
