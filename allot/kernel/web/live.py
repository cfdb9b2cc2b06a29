"""Live updates: a publish/subscribe hub and the server-sent-events (SSE) response that streams it.

Topics are plain strings ("agent:<uuid>", "board"); a message is an SSE event name and its data.
Pages subscribe through an SSE endpoint and usually treat a message as "refresh this part": htmx
re-fetches the fragment with the reader's own session and language, so payloads stay tiny.

Publishing never blocks and never fails for the publisher: each subscriber has a bounded queue,
and when a slow subscriber's queue is full its oldest message is dropped and it is told to
`resync` (fetch everything again). A stalled browser costs at most `max_queue` messages of memory.

`publish` must be called on the event loop's thread (event handlers and endpoints are).

Scaling out (issue 5: updates must reach users connected to any API replica): `LiveHub` reaches
the browsers connected to THIS process. With `redis_url` set, `install_live` makes a `RedisHub`
(`live_redis.py`) instead, behind the same `Hub` interface (`publish`, `subscribe`, `close`): its
`publish` also sends to one Redis channel, and one listener task per process hands what other
processes sent to `deliver`, the local fan-out below. Callers and SSE endpoints don't change.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import threading
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

from fastapi import FastAPI
from starlette.responses import StreamingResponse

RESYNC = "resync"  # "you missed messages: fetch everything again"
HEARTBEAT_SECONDS = 15.0  # idle proxies close connections that stay silent for ~30-60 s
RETRY_MILLISECONDS = 3000  # how soon a browser reconnects after the stream ended
DEFAULT_MAX_QUEUE = 100


@dataclass(frozen=True, slots=True)
class LiveMessage:
    event: str
    data: str = ""
    topic: str = ""


class LiveClosed(Exception):
    """The subscription ended: the subscriber left, or the hub closed (shutdown)."""


class Subscription:
    """One subscriber's bounded queue of messages on some topics."""

    def __init__(
        self,
        topics: frozenset[str],
        max_queue: int,
        on_close: Callable[[Subscription], None] = lambda _: None,
    ) -> None:
        self.topics = topics
        self.dropped = 0
        self._max_queue = max_queue
        self._queue: deque[LiveMessage] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._resync = False
        self._on_close = on_close

    @property
    def closed(self) -> bool:
        return self._closed

    def offer(self, message: LiveMessage) -> None:
        """Queue a message without ever waiting: a full queue loses its oldest message."""
        if self._closed:
            return
        if len(self._queue) >= self._max_queue:
            self._queue.popleft()
            self.dropped += 1
            self._resync = True
        self._queue.append(message)
        self._ready.set()

    def poll(self) -> LiveMessage | None:
        """The next queued message (a `resync` first after an overflow), or None if none is."""
        if self._closed:
            raise LiveClosed
        if self._resync:
            self._resync = False
            return LiveMessage(RESYNC)
        if self._queue:
            return self._queue.popleft()
        self._ready.clear()
        return None

    async def receive(self, within: float | None = None) -> LiveMessage | None:
        """Wait for the next message; None when `within` seconds pass without one."""
        message = self.poll()
        if message is not None:
            return message
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), within)
        return self.poll()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.clear()
            self._ready.set()  # wakes a waiting receive(), which then raises LiveClosed
            self._on_close(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> LiveMessage:
        try:
            while True:
                message = await self.receive()
                if message is not None:
                    return message
        except LiveClosed:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.close()


class Hub(Protocol):
    """What publishers and SSE endpoints rely on (in-process today, Redis when scaled out)."""

    def publish(self, topic: str, event: str, data: str = "") -> None: ...

    def subscribe(self, *topics: str) -> Subscription: ...

    def close(self) -> None: ...


class LiveHub:
    """The in-process hub: fans each message out to the subscribers of its topic."""

    def __init__(self, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self.max_queue = max_queue
        self._by_topic: dict[str, set[Subscription]] = defaultdict(set)
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self, topic: str, event: str, data: str = "") -> None:
        self.deliver(LiveMessage(event, data, topic))

    def deliver(self, message: LiveMessage) -> int:
        """Hand a message to the local subscribers of its topic; returns how many got it."""
        subscribers = list(self._by_topic.get(message.topic, ()))
        for subscription in subscribers:
            subscription.offer(message)
        return len(subscribers)

    def subscribe(self, *topics: str) -> Subscription:
        if not topics:
            raise ValueError("Subscribe to at least one topic")
        subscription = Subscription(frozenset(topics), self.max_queue, self.unsubscribe)
        if self._closed:
            subscription.close()
            return subscription
        for topic in subscription.topics:
            self._by_topic[topic].add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        for topic in subscription.topics:
            subscribers = self._by_topic.get(topic)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._by_topic[topic]
        if not subscription.closed:
            subscription.close()

    def subscriber_count(self, topic: str | None = None) -> int:
        if topic is not None:
            return len(self._by_topic.get(topic, ()))
        return len({s for subscribers in self._by_topic.values() for s in subscribers})

    def close(self) -> None:
        """End every subscription (their streams finish) and refuse new ones: shutting down."""
        self._closed = True
        for subscribers in list(self._by_topic.values()):
            for subscription in list(subscribers):
                subscription.close()


# -- server-sent events ----------------------------------------------------------------------
def encode_event(event: str, data: str = "") -> bytes:
    """One SSE frame: `event:` line, one `data:` line per line of data, blank line."""
    if any(c in event for c in "\r\n:") or not event:
        raise ValueError(f"Not a valid SSE event name: {event!r}")
    lines = [f"event: {event}"]
    lines += [f"data: {line}" for line in (data.splitlines() or [""])]
    return ("\n".join(lines) + "\n\n").encode()


async def event_stream(
    hub: Hub,
    topics: Iterable[str],
    *,
    min_interval: float = 0.0,
    heartbeat_seconds: float = HEARTBEAT_SECONDS,
    retry_milliseconds: int = RETRY_MILLISECONDS,
) -> AsyncIterator[bytes]:
    """The bytes of an SSE stream of `topics`, until the subscription ends.

    Messages with the same event name that arrive within `min_interval` seconds of the last
    frame are coalesced into one (the newest): a page that refreshes on "board" then refreshes
    at most once per interval however many changes a burst brings. A comment line goes out after
    `heartbeat_seconds` of silence. Subscribing happens here, when the stream starts, so a
    response that is never sent leaves no subscription behind.
    """
    subscription = hub.subscribe(*topics)
    loop = asyncio.get_running_loop()
    try:
        # The first bytes carry the reconnect delay and make proxies pass the headers on now.
        yield f"retry: {retry_milliseconds}\n: connected\n\n".encode()
        pending: dict[str, LiveMessage] = {}
        last_frame = -math.inf
        last_write = loop.time()
        while True:
            now = loop.time()
            if pending and now >= last_frame + min_interval:
                yield b"".join(encode_event(m.event, m.data) for m in pending.values())
                pending.clear()
                last_frame = last_write = now
                continue
            if now >= last_write + heartbeat_seconds:
                yield b": heartbeat\n\n"
                last_write = now
                continue
            deadline = last_write + heartbeat_seconds
            if pending:
                deadline = min(deadline, last_frame + min_interval)
            try:
                message = await subscription.receive(within=max(deadline - now, 0.0))
                while message is not None:
                    pending[message.event] = message
                    message = subscription.poll()
            except LiveClosed:
                break
        if pending:
            yield b"".join(encode_event(m.event, m.data) for m in pending.values())
    finally:
        subscription.close()


def sse_response(
    hub: Hub,
    topics: Iterable[str],
    *,
    min_interval: float = 0.0,
    heartbeat_seconds: float = HEARTBEAT_SECONDS,
) -> StreamingResponse:
    """A `text/event-stream` response of `topics`. Open no database session for its lifetime:
    read what the endpoint needs first; the stream itself only waits on the hub."""
    stream = event_stream(
        hub, list(topics), min_interval=min_interval, heartbeat_seconds=heartbeat_seconds
    )
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# -- wiring into the app ---------------------------------------------------------------------
def install_live(app: FastAPI, hub: LiveHub | None = None) -> LiveHub:
    """The app's hub (`app.state.live`), created on first call; closed when the app stops."""
    existing: LiveHub | None = getattr(app.state, "live", None)
    if existing is not None:
        return existing
    live = hub or _configured_hub(getattr(app.state, "settings", None))
    app.state.live = live
    _close_with_app(app, live)
    return live


def _configured_hub(settings: Any) -> LiveHub:
    """Through Redis when `redis_url` is set (updates reach every replica), else in-process."""
    if settings is None or not settings.redis_url:
        return LiveHub()
    from allot.kernel.web.live_redis import RedisHub

    return RedisHub(settings.redis_url, settings.redis_namespace)


def get_hub(app: Any) -> LiveHub:
    return install_live(app)


# The hub of a process that serves no pages (`allot worker` in broker mode runs the live-update
# consumers): set by the runtime to a Redis hub, so what those consumers publish reaches the
# browsers connected to any API replica. None in a process with a web app (it has its own).
_process_hub: LiveHub | None = None


def process_hub() -> LiveHub | None:
    return _process_hub


def set_process_hub(hub: LiveHub | None) -> None:
    global _process_hub
    _process_hub = hub


def _close_with_app(app: FastAPI, hub: LiveHub) -> None:
    """Close the hub when the server begins to stop, not only when the app's lifespan ends.

    uvicorn waits for open responses to finish BEFORE it runs the lifespan shutdown, and an SSE
    stream never finishes on its own: closing only at lifespan exit would hang every shutdown.
    So, while the app runs, SIGINT/SIGTERM first close the hub (ending the streams) and then go
    on to the server's own handler.
    """
    original = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(asgi_app: Any) -> AsyncIterator[Any]:
        restore = close_on_signals(hub, asyncio.get_running_loop())
        start = getattr(hub, "start", None)
        if start is not None:  # RedisHub: its listener runs while the app does
            start()
        try:
            async with original(asgi_app) as state:
                yield state
        finally:
            restore()
            hub.close()

    app.router.lifespan_context = lifespan


SignalHandler = Callable[[int, FrameType | None], Any]


def close_on_signals(
    hub: LiveHub,
    loop: asyncio.AbstractEventLoop,
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
) -> Callable[[], None]:
    """Chain "close the hub" in front of the current handlers of `signals`; returns the undo.

    Only where a server already handles the signal (a callable handler in the main thread):
    without one, the default action ends the process anyway.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    installed: dict[signal.Signals, tuple[SignalHandler, SignalHandler]] = {}
    for number in signals:
        previous = signal.getsignal(number)
        if not callable(previous) or previous is signal.default_int_handler:
            continue

        def handler(
            signum: int, frame: FrameType | None, previous: SignalHandler = previous
        ) -> None:
            loop.call_soon_threadsafe(hub.close)
            previous(signum, frame)

        signal.signal(number, handler)
        installed[number] = (handler, previous)

    def restore() -> None:
        for number, (handler, previous) in installed.items():
            if signal.getsignal(number) is handler:
                signal.signal(number, previous)

    return restore
