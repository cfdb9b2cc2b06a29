"""Live updates across API replicas through the real Redis: two hubs with connections of their own
stand for two processes. A message published on one reaches the other's subscribers (and its
own, once); an outage never blocks or fails a publisher, and afterwards every subscriber that
may have missed something is told to resync."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from allot.app import create_app
from allot.kernel.web.live import RESYNC, LiveMessage
from allot.kernel.web.live_redis import RedisHub
from tests.local_servers import serving

BOUND = 5.0  # seconds: every wait in these tests ends by then, or the test fails


@pytest.fixture
async def hubs(redis_url, service_namespace):
    made: list[RedisHub] = []

    async def make(url: str | None = None) -> RedisHub:
        hub = RedisHub(url or redis_url, service_namespace, timeout=0.5)
        made.append(hub)
        await hub.wait_listening(BOUND)
        return hub

    yield make
    for hub in made:
        hub.close()
    await asyncio.sleep(0)  # let the cancelled tasks close their connections


async def next_message(subscription) -> LiveMessage:
    message = await subscription.receive(within=BOUND)
    assert message is not None, "no message within the bound"
    return message


async def test_a_message_published_on_one_replica_reaches_the_other(hubs):
    one, two = await hubs(), await hubs()
    here, there = one.subscribe("board"), two.subscribe("board", "agent:7")
    elsewhere = two.subscribe("agent:8")
    one.publish("board", "board", "routing.item.offered")
    one.publish("agent:7", "inbox", "routing.item.offered")
    assert await next_message(there) == LiveMessage("board", "routing.item.offered", "board")
    assert await next_message(there) == LiveMessage("inbox", "routing.item.offered", "agent:7")
    # The publisher's own subscriber had it at once, and only once (its echo is skipped).
    assert here.poll() == LiveMessage("board", "routing.item.offered", "board")
    two.publish("board", "board", "pong")
    assert await next_message(here) == LiveMessage("board", "pong", "board")
    assert here.poll() is None
    assert elsewhere.poll() is None
    assert (one.published, two.received) == (2, 2)


async def test_a_burst_arrives_complete_and_in_order(hubs):
    one, two = await hubs(), await hubs()
    there = two.subscribe("board")
    for n in range(50):
        one.publish("board", "board", str(n))
    assert [(await next_message(there)).data for _ in range(50)] == [str(n) for n in range(50)]


async def test_publishing_while_redis_is_down_neither_blocks_nor_fails(hubs, proxy, redis_url):
    one = await hubs(proxy.url_through(redis_url))
    two = await hubs()
    here, there = one.subscribe("board"), two.subscribe("board")
    proxy.cut()
    for n in range(3):
        one.publish("board", "board", f"during-{n}")  # returns at once, raises nothing
    # Local subscribers still hear everything; the other replica hears nothing ...
    assert [here.poll().data for _ in range(3)] == ["during-0", "during-1", "during-2"]
    async with asyncio.timeout(BOUND):
        while one.lost < 3:
            await asyncio.sleep(0.01)
    assert there.poll() is None
    # ... until Redis is back: one resync first (whatever it missed), then the new message.
    proxy.restore()
    one.send_breaker.reset()  # skip the pause the sender takes after a failure
    one.publish("board", "board", "after")
    assert await next_message(there) == LiveMessage(RESYNC)
    assert await next_message(there) == LiveMessage("board", "after", "board")


async def test_a_listener_that_lost_redis_tells_its_subscribers_to_resync(hubs, proxy, redis_url):
    one = await hubs()
    two = await hubs(proxy.url_through(redis_url))
    there = two.subscribe("agent:1")
    proxy.cut()
    one.publish("agent:1", "inbox", "missed")  # lost for replica two: it is disconnected
    proxy.restore()
    assert await next_message(there) == LiveMessage(RESYNC)  # after the reconnect
    assert two.reconnects == 1
    one.publish("agent:1", "inbox", "heard")
    assert await next_message(there) == LiveMessage("inbox", "heard", "agent:1")


async def test_a_closed_hub_stops_listening_and_refuses_subscribers(hubs):
    one = await hubs()
    subscription = one.subscribe("board")
    one.close()
    assert subscription.closed
    assert one.subscribe("board").closed
    one.publish("board", "board")  # after shutdown: a no-op, not an error


# -- two real app instances, one SSE stream -----------------------------------------------------
async def test_a_change_made_on_one_api_replica_reaches_a_board_open_on_another(
    settings, database, redis_url, service_namespace, clock
):
    from allot.contexts.routing import live
    from tests.contexts.routing.helpers import make_agent, make_queue, set_status
    from tests.factories import auth_headers, make_user

    scaled = settings.model_copy(update={"redis_url": redis_url,
                                         "redis_namespace": service_namespace})  # fmt: skip
    replica_a = create_app(scaled, database, run_background=False)
    replica_b = create_app(scaled, database, run_background=False)
    hub_a, hub_b = replica_a.state.live, replica_b.state.live
    assert isinstance(hub_a, RedisHub)
    assert isinstance(hub_b, RedisHub)
    assert hub_a.channel == hub_b.channel
    assert hub_a.origin != hub_b.origin
    manager = await make_user(database, roles=["manager"], password=None)
    headers = await auth_headers(database, manager)
    await make_queue(database)
    anna = await make_agent(database, status="offline")
    try:
        async with (
            serving(replica_a, bound=BOUND) as url,
            httpx.AsyncClient(base_url=url, timeout=BOUND) as http,
            http.stream("GET", "/board/stream", headers=headers) as response,
        ):
            assert response.status_code == 200
            lines = response.aiter_lines()
            assert (await anext(lines)).startswith("retry: ")
            await hub_a.wait_listening(BOUND)
            async with asyncio.timeout(BOUND):
                while hub_a.subscriber_count(live.BOARD_TOPIC) != 1:
                    await asyncio.sleep(0.01)
            # The change is committed and dispatched by replica B's process: its routing
            # consumer publishes on B's hub (the hub of the app installed last).
            assert live._hub is hub_b
            await set_status(database, anna.id, "available")
            await replica_b.state.dispatcher.drain()
            async with asyncio.timeout(BOUND):
                frame = []
                async for line in lines:
                    if line == "" and frame:
                        break
                    if line and not line.startswith(":"):
                        frame.append(line)
            assert frame == ["event: board", "data: routing.agent.status_changed"]
    finally:
        hub_a.close()
        hub_b.close()
