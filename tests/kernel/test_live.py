"""The live-update hub and its server-sent-events stream: fan-out, bounded queues that never block
the publisher, coalescing, heartbeats, and the end of a stream (subscriber gone, app stopping)."""

from __future__ import annotations

import asyncio
import signal

import pytest
from fastapi import FastAPI

from allot.kernel.web.live import (
    RESYNC,
    LiveHub,
    LiveMessage,
    close_on_signals,
    encode_event,
    event_stream,
    install_live,
    sse_response,
)

BOUND = 5.0  # seconds: every wait in these tests ends by then, or the test fails


async def next_chunk(stream) -> bytes:
    return await asyncio.wait_for(stream.__anext__(), BOUND)


async def test_a_message_reaches_every_subscriber_of_its_topic_only():
    hub = LiveHub()
    anna, boris = hub.subscribe("agent:1"), hub.subscribe("agent:1", "board")
    board_only = hub.subscribe("board")
    hub.publish("agent:1", "inbox", "offered")
    assert await anna.receive(within=0) == LiveMessage("inbox", "offered", "agent:1")
    assert await boris.receive(within=0) == LiveMessage("inbox", "offered", "agent:1")
    assert await board_only.receive(within=0) is None
    hub.publish("board", "board")
    assert (await boris.receive(within=0)).topic == "board"
    assert (await board_only.receive(within=0)).topic == "board"
    assert await anna.receive(within=0) is None


async def test_a_waiting_subscriber_wakes_when_a_message_arrives():
    hub = LiveHub()
    subscription = hub.subscribe("board")
    waiting = asyncio.create_task(subscription.__anext__())
    await asyncio.sleep(0)
    assert not waiting.done()
    hub.publish("board", "board", "x")
    assert (await asyncio.wait_for(waiting, BOUND)).data == "x"


async def test_a_slow_subscriber_loses_its_oldest_messages_and_is_told_to_resync():
    hub = LiveHub(max_queue=3)
    slow, fast = hub.subscribe("board"), hub.subscribe("board")
    for n in range(10):
        hub.publish("board", "board", str(n))  # never waits, however full the queues are
        assert (await fast.receive(within=0)).data == str(n)
    assert slow.dropped == 7
    received = [await slow.receive(within=0) for _ in range(4)]
    assert [m.event for m in received] == [RESYNC, "board", "board", "board"]
    assert [m.data for m in received[1:]] == ["7", "8", "9"]  # the newest are kept
    assert await slow.receive(within=0) is None


async def test_closing_a_subscription_unsubscribes_it_and_ends_its_iteration():
    hub = LiveHub()
    subscription = hub.subscribe("agent:1", "board")
    waiting = asyncio.create_task(subscription.__anext__())
    await asyncio.sleep(0)
    assert hub.subscriber_count() == 1
    subscription.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, BOUND)
    assert hub.subscriber_count("board") == hub.subscriber_count("agent:1") == 0
    hub.publish("board", "board")  # nobody left: nothing to do, no error


async def test_closing_the_hub_ends_every_subscription_and_refuses_new_ones():
    hub = LiveHub()
    first, second = hub.subscribe("a"), hub.subscribe("b")
    hub.close()
    assert first.closed
    assert second.closed
    assert hub.subscriber_count() == 0
    late = hub.subscribe("a")
    assert late.closed
    assert [m async for m in late] == []


def test_frames_follow_the_sse_format():
    assert encode_event("inbox", "routing.item.offered") == (
        b"event: inbox\ndata: routing.item.offered\n\n"
    )
    assert encode_event("board", "two\nlines") == b"event: board\ndata: two\ndata: lines\n\n"
    assert encode_event("ping") == b"event: ping\ndata: \n\n"
    with pytest.raises(ValueError):
        encode_event("bad\nname")


async def test_the_stream_opens_with_the_retry_hint_and_carries_published_events():
    hub = LiveHub()
    stream = event_stream(hub, ["board"])
    opening = await next_chunk(stream)
    assert opening.startswith(b"retry: ")
    assert hub.subscriber_count("board") == 1  # subscribed once the stream started
    hub.publish("board", "board", "routing.item.assigned")
    assert await next_chunk(stream) == b"event: board\ndata: routing.item.assigned\n\n"
    await stream.aclose()
    assert hub.subscriber_count("board") == 0  # the client went away: unsubscribed


async def test_a_burst_is_coalesced_into_one_frame_per_interval():
    hub = LiveHub(max_queue=2000)
    stream = event_stream(hub, ["board"], min_interval=0.3)
    await next_chunk(stream)
    hub.publish("board", "board", "first")
    assert await next_chunk(stream) == b"event: board\ndata: first\n\n"
    for n in range(1000):  # a burst of assignments
        hub.publish("board", "board", f"change {n}")
    hub.publish("board", "other", "kept too")
    frame = await next_chunk(stream)
    assert frame == b"event: board\ndata: change 999\n\nevent: other\ndata: kept too\n\n"
    await stream.aclose()


async def test_a_silent_stream_sends_heartbeat_comments():
    hub = LiveHub()
    stream = event_stream(hub, ["board"], heartbeat_seconds=0.05)
    await next_chunk(stream)
    assert await next_chunk(stream) == b": heartbeat\n\n"
    assert await next_chunk(stream) == b": heartbeat\n\n"
    await stream.aclose()


async def test_the_stream_ends_when_the_hub_closes():
    hub = LiveHub()
    stream = event_stream(hub, ["board"])
    await next_chunk(stream)
    waiting = asyncio.create_task(next_chunk(stream))
    await asyncio.sleep(0.01)
    hub.close()  # the app is stopping
    with pytest.raises(StopAsyncIteration):
        await waiting


def test_the_sse_response_is_an_uncached_event_stream():
    response = sse_response(LiveHub(), ["board"])
    assert response.media_type == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"


async def test_install_live_gives_the_app_one_hub_closed_when_the_app_stops():
    app = FastAPI()
    hub = install_live(app)
    assert install_live(app) is hub is app.state.live
    subscription = hub.subscribe("board")
    async with app.router.lifespan_context(app):
        assert not hub.closed
    assert hub.closed
    assert subscription.closed


async def test_a_stop_signal_closes_the_hub_before_the_servers_own_handler_runs():
    hub = LiveHub()
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        restore = close_on_signals(hub, asyncio.get_running_loop(), (signal.SIGTERM,))
        signal.raise_signal(signal.SIGTERM)
        await asyncio.sleep(0.01)  # the hub closes on the loop, soon after the signal
        assert received == [signal.SIGTERM]
        assert hub.closed
        restore()
        assert signal.getsignal(signal.SIGTERM) is not None
        signal.raise_signal(signal.SIGTERM)  # our part is gone; the server's handler remains
        assert received == [signal.SIGTERM, signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
