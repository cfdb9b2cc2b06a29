"""Connecting to RabbitMQ: a robust connection (aio-pika restores channels, declarations and
consumers after a drop) with Allot's reconnect policy, and a stop signal that interrupts any
wait.

While the broker is away a process logs two lines per outage, not one per attempt: a warning
when the broker becomes unreachable (the error's class, never the URL's password) and an info
line when it is back (how long it was away, plus what the role adds: the relay its outbox
backlog). Attempts are spaced by the kernel's backoff (`backoff_seconds`: exponential, full
jitter) from RECONNECT_BASE_SECONDS up to RECONNECT_CAP_SECONDS, so replicas do not reconnect
in step when the broker comes back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aio_pika.connection import make_url
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aio_pika.robust_channel import RobustChannel
from aio_pika.robust_connection import RobustConnection

from allot.kernel.events.dispatcher import backoff_seconds
from allot.kernel.logging import get_logger

log = get_logger(__name__)

RECONNECT_BASE_SECONDS = 0.5
RECONNECT_CAP_SECONDS = 10.0
BACK_DETAILS_TIMEOUT_SECONDS = 2.0

# What the extra fields of the "back" line come from (the relay: its outbox backlog).
BackDetails = Callable[[], Awaitable[dict[str, Any]]]


def mask_url(url: str) -> str:
    """The URL with its password replaced by *** (for logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(
        parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1))
    )


def reconnect_delay(failures: int) -> float:
    """How long to wait after the `failures`-th failed attempt in a row: the kernel's backoff
    with full jitter, RECONNECT_BASE_SECONDS doubling up to RECONNECT_CAP_SECONDS."""
    return backoff_seconds(max(1, failures), base=RECONNECT_BASE_SECONDS, cap=RECONNECT_CAP_SECONDS)


def connection_name(role: str, namespace: str) -> str:
    """How a connection shows in RabbitMQ's management UI and `rabbitmqctl list_connections`:
    the role, the namespace and the process, so an operator (or a test) can tell which is whose."""
    return f"{role} {namespace} pid {os.getpid()} {socket.gethostname()}"


class BrokerAvailability:
    """Whether this process reaches the broker, and the two log lines of an outage.

    One per connection (a relay's, a worker's); the connection reports each drop (`lost`),
    each failed attempt (`failed_attempt`, which returns the wait before the next one) and
    each success (`back`)."""

    def __init__(self, name: str, url: str, details: BackDetails | None = None) -> None:
        self.name = name
        self.url = url
        self.details = details
        self.down_since: float | None = None
        self.failures = 0  # failed attempts in a row
        self.outages = 0  # since start: a round can tell whether one began while it ran

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def lost(self, error: BaseException | None) -> None:
        """The broker became unreachable (a drop, or a first connect that failed): warn once."""
        if self.down_since is not None:
            return
        self.down_since = time.monotonic()
        self.outages += 1
        log.warning(
            "broker unreachable; reconnecting with backoff",
            process=self.name,
            broker=mask_url(self.url),
            error=type(error).__name__ if error is not None else "closed",
            detail=self._detail(error),
        )

    def failed_attempt(self, error: BaseException) -> float:
        """Another attempt failed (no log line); the wait before the next one."""
        self.lost(error)
        self.failures += 1
        return reconnect_delay(self.failures)

    async def back(self) -> None:
        """Connected (again): the info line closing an outage, if there was one."""
        self.failures = 0
        if self.down_since is None:
            return
        away = time.monotonic() - self.down_since
        self.down_since = None
        extra: dict[str, Any] = {}
        if self.details is not None:
            with contextlib.suppress(Exception):  # a detail, not worth failing a reconnect
                async with asyncio.timeout(BACK_DETAILS_TIMEOUT_SECONDS):
                    extra = await self.details()
        log.info(
            "broker reachable again",
            process=self.name,
            away_s=round(away, 1),
            **extra,
        )

    def _detail(self, error: BaseException | None) -> str:
        """The error's text without the password (a library may quote the URL), shortened."""
        text = str(error) if error is not None else ""
        password = urlsplit(self.url).password
        if password:
            text = text.replace(password, "***")
        return text[:200]


class BrokerChannel(RobustChannel):
    """aio-pika's robust channel, without its error line per channel on every drop: a channel
    that sees its close before the connection does tries to reopen itself over the dead
    connection and fails ("RuntimeError: <Connection ...> closed", logged by aio-pika as an
    error). Harmless — the connection restores every channel once it is back — and a worker
    has a channel per queue: dozens of error lines per outage."""

    async def _on_close(self, closing: asyncio.Future[Any]) -> BaseException | None:
        try:
            return await super()._on_close(closing)
        except RuntimeError:
            transport = self._connection.transport
            if transport is not None and not transport.connection.is_closed:
                raise
            return None


class BrokerConnection(RobustConnection):
    """aio-pika's robust connection with `BrokerAvailability`'s policy and log lines instead of
    a fixed reconnect interval and a log line per attempt.

    aio-pika (10.2.1, pinned in constraints.txt) keeps reconnecting in a private loop,
    `RobustConnection.__connection_factory`; it is replaced here, by its mangled name, with
    the same loop and our waits. tests/kernel/broker/test_reconnect_logging.py fails if an
    upgrade renames what it relies on (the lines and the backoff would silently revert)."""

    CHANNEL_CLASS = BrokerChannel
    availability: BrokerAvailability

    def __init__(self, url: Any, availability: BrokerAvailability, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.availability = availability

    def _private(self, name: str) -> Any:
        return getattr(self, f"_RobustConnection__{name}")

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        await super()._on_connection_close(closing)
        if self._close_called or self.is_closed:
            return  # closed by us: not an outage
        try:
            error = closing.exception()
        except asyncio.CancelledError as exc:
            error = exc
        self.availability.lost(error)

    async def _on_connected(self) -> None:
        await super()._on_connected()  # channels, declarations and consumers restored
        await self.availability.back()

    async def _RobustConnection__connection_factory(self) -> None:
        """aio-pika's reconnect loop: wait for a drop (or a consumer to restore), connect again;
        the first attempt at once, the next ones after `reconnect_delay`."""
        restore: asyncio.Event = self._private("restore_event")
        first_connect: asyncio.Future[None] = self._private("fail_fast_future")
        while not self.is_closed and not self._close_called:
            await restore.wait()
            restore.clear()
            if self.is_closed or self._close_called:
                return
            pause = 0.0
            try:
                transport = self.transport
                if transport is not None and not transport.connection.is_closed:
                    for channel in tuple(self._private("channels")):
                        if (
                            isinstance(channel, RobustChannel)
                            and await channel._restore_consumers()
                        ):
                            restore.set()
                            pause = RECONNECT_BASE_SECONDS
                else:
                    await self._private("connect_transport")()
                    # A broker that accepts and drops at once is not hammered.
                    pause = RECONNECT_BASE_SECONDS
            except CONNECTION_EXCEPTIONS as exc:
                restore.set()
                if not first_connect.done():  # `connect()` raises it: connect_until_stopped
                    first_connect.set_exception(exc)
                    return
                pause = self.availability.failed_attempt(exc)
            except asyncio.CancelledError as exc:
                restore.set()
                if self._close_called or self.is_closed:
                    raise
                pause = self.availability.failed_attempt(exc)
            except Exception as exc:  # not an outage (say, a restored queue refused): say so
                restore.set()
                pause = self.availability.failed_attempt(exc)
                log.error(
                    "broker reconnection failed",
                    process=self.availability.name,
                    error=type(exc).__name__,
                    detail=self.availability._detail(exc),
                    retry_in_s=round(pause, 2),
                )
            await asyncio.sleep(pause)


async def connect(url: str, availability: BrokerAvailability) -> BrokerConnection:
    connection = BrokerConnection(
        make_url(url),
        availability,
        client_properties={"connection_name": availability.name},
        # Only the interval aio-pika names in its own "closed" log line (silenced below).
        reconnect_interval=RECONNECT_BASE_SECONDS,
    )
    try:
        await connection.connect()
    except BaseException:
        with contextlib.suppress(Exception):
            await connection.close()
        raise
    return connection


class StopSignal:
    """Set once by `stop()`; waits in the background loops end as soon as it is set."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    @property
    def is_set(self) -> bool:
        return self.event.is_set()

    def set(self) -> None:
        self.event.set()

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True if stopped meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout=max(0.0, seconds))
        return self.event.is_set()


async def connect_until_stopped(
    availability: BrokerAvailability,
    stop: StopSignal,
    on_failure: Callable[[], None] | None = None,
) -> BrokerConnection | None:
    """Connect, retrying with backoff while the broker is down; None if stopped first."""
    while not stop.is_set:
        try:
            return await connect(availability.url, availability)
        except Exception as exc:  # refused, DNS, TLS, auth: all worth another try later
            if on_failure is not None:
                on_failure()
            await stop.sleep(availability.failed_attempt(exc))
    return None


class _OutageNoise(logging.Filter):
    """Drops the libraries' own line per failed attempt or drop: `BrokerAvailability` logs the
    outage once. Matched on the format strings of aiormq 7.2.4 and aio-pika 10.2.1; their other
    lines (a server-side close with its reason, a blocked connection) still pass."""

    PER_ATTEMPT = frozenset(
        {
            "error when creating transport: %r",
            "Cancelling cause reader exited abnormally",
            "Connection to %s closed. Reconnecting after %r seconds.",
        }
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.PER_ATTEMPT


for _logger in ("aiormq.connection", "aio_pika.robust_connection"):
    logging.getLogger(_logger).addFilter(_OutageNoise())
