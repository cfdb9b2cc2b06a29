"""Live updates of the routing pages: routing events reach the right topics after commit, and the
inbox stream delivers them over real HTTP without holding a database connection."""

from __future__ import annotations

import asyncio

import httpx

from allot.contexts.routing import live
from allot.kernel.web.live import LiveHub
from tests.factories import auth_headers, make_user
from tests.local_servers import serving

from .helpers import complete, make_agent, make_queue, submit

BOUND = 10.0  # seconds: no wait in these tests lasts longer


def received(subscription) -> list[tuple[str, str]]:
    messages = []
    while (message := subscription.poll()) is not None:
        messages.append((message.event, message.data))
    return messages


async def test_an_offer_is_announced_to_its_agent_and_to_the_board(app, database, clock):
    hub: LiveHub = app.state.live
    await make_queue(database, offer_mode="offer")
    anna = await make_agent(database, capacity=1)
    boris = await make_agent(database, capacity=0)  # a member with no room: offered nothing
    await app.state.dispatcher.drain()
    inbox_anna = hub.subscribe(live.agent_topic(anna.id))
    inbox_boris = hub.subscribe(live.agent_topic(boris.id))
    board = hub.subscribe(live.BOARD_TOPIC)

    result = await submit(database)
    assert received(inbox_anna) == []  # nothing before the transaction's events are dispatched
    await app.state.dispatcher.drain()

    assert result.state == "offered"
    assert received(inbox_anna) == [("inbox", "routing.item.offered")]
    assert received(inbox_boris) == []
    assert ("board", "routing.item.offered") in received(board)


async def test_completing_an_item_refreshes_its_owners_inbox(app, database, clock):
    hub: LiveHub = app.state.live
    await make_queue(database)
    anna = await make_agent(database)
    await submit(database, reference="lead:done-soon")
    await app.state.dispatcher.drain()
    inbox = hub.subscribe(live.agent_topic(anna.id))
    await complete(database, "lead:done-soon")
    await app.state.dispatcher.drain()
    assert ("inbox", "routing.item.completed") in received(inbox)


async def test_a_status_change_refreshes_the_agents_inbox_and_the_board(app, database, clock):
    hub: LiveHub = app.state.live
    await make_queue(database)
    anna = await make_agent(database, status="offline")
    await app.state.dispatcher.drain()
    inbox, board = hub.subscribe(live.agent_topic(anna.id)), hub.subscribe(live.BOARD_TOPIC)
    from .helpers import set_status

    await set_status(database, anna.id, "available")
    await app.state.dispatcher.drain()
    assert received(inbox) == [("inbox", "routing.agent.status_changed")]
    assert received(board) == [("board", "routing.agent.status_changed")]


async def _until(condition) -> None:
    async with asyncio.timeout(BOUND):
        while not condition():
            await asyncio.sleep(0.01)


def _connections_in_use(database) -> int:
    engines = {database.write_engine.sync_engine, database.read_engine.sync_engine}
    return sum(engine.pool.checkedout() for engine in engines)


async def test_the_inbox_stream_delivers_an_offer_and_lets_go_when_the_browser_leaves(
    app, database
):
    hub: LiveHub = app.state.live
    user = await make_user(database, roles=["operator"], password=None)
    await make_queue(database, offer_mode="offer")
    anna = await make_agent(database, email=user.email, capacity=1)
    await app.state.dispatcher.drain()
    headers = await auth_headers(database, user)
    topic = live.agent_topic(anna.id)

    async with (
        serving(app, bound=BOUND) as url,
        httpx.AsyncClient(base_url=url, timeout=BOUND) as http,
    ):
        async with http.stream("GET", "/inbox/stream", headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.aiter_lines()
            assert (await anext(lines)).startswith("retry: ")
            await _until(lambda: hub.subscriber_count(topic) == 1)
            # Streaming holds no database connection: the writer (SQLite has one) stays free.
            assert _connections_in_use(database) == 0
            await submit(database)
            await app.state.dispatcher.drain()
            async with asyncio.timeout(BOUND):
                frame = []
                async for line in lines:
                    if line == "" and frame:
                        break
                    if line and not line.startswith(":"):
                        frame.append(line)
            assert frame == ["event: inbox", "data: routing.item.offered"]
        # The browser left: the server notices the disconnect and drops the subscription.
        await _until(lambda: hub.subscriber_count(topic) == 0)


async def test_the_inbox_stream_tells_a_user_who_is_no_agent_not_to_reconnect(client, database):
    user = await make_user(database, roles=["operator"], password=None)
    response = await client.get("/inbox/stream", headers=await auth_headers(database, user))
    assert response.status_code == 204


async def test_streams_need_the_pages_permission(client, database):
    analyst = await make_user(database, roles=["analyst"], password=None)
    operator = await make_user(database, roles=["operator"], password=None)
    assert (
        await client.get("/inbox/stream", headers=await auth_headers(database, analyst))
    ).status_code == 403
    assert (
        await client.get("/board/stream", headers=await auth_headers(database, operator))
    ).status_code == 403
    assert (await client.get("/board/stream")).status_code == 401
