"""Live updates across API replicas: `RedisHub`, the `Hub` that carries each message through
Redis pub/sub to the browsers connected to every process (see `kernel/web/live.py`).

- `publish` hands the message to this process's subscribers at once (they never wait for a round
  trip, and still get it while Redis is down) and queues it for Redis. It never blocks and never
  fails: a sender task drains the queue into pipelined PUBLISHes. If Redis is unreachable the
  queued messages are dropped (logged once per outage), and when it is back the sender
  publishes one "resync" so every other process tells its subscribers to fetch everything again.
- One listener task per process subscribes to ONE channel, `<namespace>:live`, and hands what
  other processes published to the local fan-out (`LiveHub.deliver`). One channel, with the
  topic inside the message, keeps the listener's subscription fixed however browsers come and
  go; every process receives every message and ignores those for topics nobody here follows —
  a dictionary lookup per message, cheap at the rates a UI refresh runs at (hundreds per
  second). Its own messages come back too and are skipped (they carry this hub's origin id).
- When the listener loses its connection it reconnects (backing off up to a few seconds), and on
  reconnecting tells every local subscriber to `resync`: whatever was published during the gap
  is lost, and a refresh of the page's fragments is what makes up for it.

Messages are tiny "refresh" hints (`[origin, topic, event, data]` as JSON), at most once, never
stored: Redis keeps nothing for this use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import deque
from typing import Any

from allot.kernel import redis as kredis
from allot.kernel.logging import get_logger
from allot.kernel.web.live import DEFAULT_MAX_QUEUE, RESYNC, LiveHub, LiveMessage, Subscription

log = get_logger(__name__)

CONTROL_RESYNC = "!resync"  # a message's topic: "everyone, resync" (sent after a publish gap)
MAX_OUTGOING = 10_000  # messages waiting for Redis; beyond, the oldest are dropped
RECONNECT_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0)  # seconds, the last one repeated


class RedisHub(LiveHub):
    def __init__(
        self,
        url: str,
        namespace: str,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        timeout: float = 1.0,
        max_outgoing: int = MAX_OUTGOING,
    ) -> None:
        super().__init__(max_queue)
        self.url = url
        self.timeout = timeout
        self.channel = kredis.keys(namespace)("live")
        self.origin = uuid.uuid4().hex
        self.max_outgoing = max_outgoing
        self.published = self.received = self.lost = 0  # counters for metrics and tests
        self.reconnects = 0
        self._outgoing: deque[str] = deque()
        self._gap = False  # messages were lost on the way out: others must resync
        self._wake: asyncio.Event | None = None
        self._listening: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.send_breaker = kredis.Breaker("live updates (publish)")

    # -- Hub ---------------------------------------------------------------------------------
    def publish(self, topic: str, event: str, data: str = "") -> None:
        self.deliver(LiveMessage(event, data, topic))
        if self.closed:
            return
        self.start()
        if len(self._outgoing) >= self.max_outgoing:
            self._outgoing.popleft()
            self.lost += 1
            self._gap = True
        self._outgoing.append(json.dumps([self.origin, topic, event, data]))
        assert self._wake is not None
        self._wake.set()

    def subscribe(self, *topics: str) -> Subscription:
        subscription = super().subscribe(*topics)
        if not self.closed:
            self.start()
        return subscription

    def close(self) -> None:
        super().close()
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the sender and the listener (idempotent; needs the running loop). The app's
        lifespan calls it; a hub used without one (in-process test clients) starts itself on
        first use."""
        if self._tasks or self.closed:
            return
        self._wake = asyncio.Event()
        self._listening = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._send_loop(), name="allot-live-redis-sender"),
            asyncio.create_task(self._listen_loop(), name="allot-live-redis-listener"),
        ]

    async def wait_listening(self, within: float) -> None:
        """Until the listener is subscribed (tests; a process needs no such wait)."""
        self.start()
        assert self._listening is not None
        await asyncio.wait_for(self._listening.wait(), within)

    def resync_local(self) -> int:
        """Tell every local subscriber to fetch everything again; returns how many were told."""
        subscribers = {s for subs in self._by_topic.values() for s in subs}
        for subscription in subscribers:
            subscription.offer(LiveMessage(RESYNC))
        return len(subscribers)

    # -- the sender --------------------------------------------------------------------------
    async def _send_loop(self) -> None:
        assert self._wake is not None
        redis = kredis.connect(self.url, self.timeout)
        breaker = self.send_breaker
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._outgoing:
                    batch = list(self._outgoing)
                    self._outgoing.clear()
                    if not breaker.closed:
                        self._drop(len(batch))
                        continue
                    try:
                        async with redis.pipeline(transaction=False) as pipe:
                            if self._gap:
                                pipe.publish(self.channel, self._resync_message())
                            for message in batch:
                                pipe.publish(self.channel, message)
                            await pipe.execute()
                        self._gap = False
                        self.published += len(batch)
                        breaker.succeeded()
                    except kredis.UNAVAILABLE as exc:
                        breaker.failed(exc)
                        self._drop(len(batch))
        finally:
            with contextlib.suppress(Exception):
                await redis.aclose()

    def _drop(self, count: int) -> None:
        self.lost += count
        self._gap = True

    def _resync_message(self) -> str:
        return json.dumps([self.origin, CONTROL_RESYNC, RESYNC, ""])

    # -- the listener ------------------------------------------------------------------------
    async def _listen_loop(self) -> None:
        assert self._listening is not None
        # No socket timeout: a subscription is silent for as long as nothing happens. A dead
        # connection shows up as a reset (Redis restarted, a proxy closed) or through the
        # driver's health check PING on an idle connection.
        redis = kredis.connect(self.url, None)
        failures = 0
        connected_before = False
        try:
            while True:
                pubsub = redis.pubsub(ignore_subscribe_messages=True)
                try:
                    await pubsub.subscribe(self.channel)
                    if connected_before:
                        self.reconnects += 1
                        told = self.resync_local()
                        log.info("live updates reconnected to redis", resynced=told)
                    connected_before = True
                    failures = 0
                    self._listening.set()
                    while True:
                        message = await pubsub.get_message(timeout=None)
                        if message is not None:
                            self._receive(message["data"])
                except kredis.UNAVAILABLE as exc:
                    self._listening.clear()
                    if failures == 0:
                        log.warning("live updates lost redis; reconnecting",
                                    error=type(exc).__name__)  # fmt: skip
                    delay = RECONNECT_BACKOFF[min(failures, len(RECONNECT_BACKOFF) - 1)]
                    failures += 1
                    await asyncio.sleep(delay)  # backoff before reconnecting, not a sync wait
                finally:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
        finally:
            with contextlib.suppress(Exception):
                await redis.aclose()

    def _receive(self, raw: Any) -> None:
        try:
            origin, topic, event, data = json.loads(raw)
        except (ValueError, TypeError):
            log.warning("unreadable live message on redis; ignored")
            return
        if origin == self.origin:
            return  # published here: local subscribers had it at once
        self.received += 1
        if topic == CONTROL_RESYNC:
            self.resync_local()
            return
        self.deliver(LiveMessage(event, data, topic))
