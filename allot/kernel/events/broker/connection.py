"""Connecting to RabbitMQ: a robust connection (aio-pika restores channels, declarations and
consumers after a drop), retried with capped backoff while the broker is unreachable, and a
stop signal that interrupts any wait."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import AbstractRobustConnection

from allot.kernel.logging import get_logger

log = get_logger(__name__)

RECONNECT_CAP_SECONDS = 30.0


def mask_url(url: str) -> str:
    """The URL with its password replaced by *** (for logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(
        parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1))
    )


def reconnect_delay(failures: int, cap: float = RECONNECT_CAP_SECONDS) -> float:
    """0.1 s, 0.2 s, 0.4 s ... up to `cap`, with ±25% jitter so replicas do not reconnect in
    step after an outage."""
    base = min(cap, 0.1 * 2 ** max(0, failures - 1))
    return float(base * random.uniform(0.75, 1.25))


def connection_name(role: str, namespace: str) -> str:
    """How a connection shows in RabbitMQ's management UI and `rabbitmqctl list_connections`:
    the role, the namespace and the process, so an operator (or a test) can tell which is whose."""
    return f"{role} {namespace} pid {os.getpid()} {socket.gethostname()}"


async def connect(url: str, name: str) -> AbstractRobustConnection:
    connection = await aio_pika.connect_robust(
        url, client_properties={"connection_name": name}, reconnect_interval=1.0
    )
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
    url: str, name: str, stop: StopSignal, on_failure: Callable[[], None] | None = None
) -> AbstractRobustConnection | None:
    """Connect, retrying with capped backoff while the broker is down; None if stopped first."""
    failures = 0
    while not stop.is_set:
        try:
            return await connect(url, name)
        except Exception as exc:  # refused, DNS, TLS, auth: all worth another try later
            failures += 1
            if on_failure is not None:
                on_failure()
            delay = reconnect_delay(failures)
            log.warning(
                "broker unreachable; retrying",
                process=name,
                url=mask_url(url),
                error=f"{type(exc).__name__}: {exc}",
                retry_in_s=round(delay, 2),
            )
            await stop.sleep(delay)
    return None
