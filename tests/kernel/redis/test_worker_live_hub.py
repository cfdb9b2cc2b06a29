"""In broker mode the live-update consumers run in `allot worker`, a process with no web app:
the runtime gives it a Redis hub, so what they publish reaches the browsers of any API replica."""

from __future__ import annotations

import uuid

import pytest

from allot.contexts.routing import events as routing_events
from allot.contexts.routing.live import BOARD_EVENT, BOARD_TOPIC, agent_topic, publish_live_updates
from allot.kernel import runtime
from allot.kernel.events.outbox import Event
from allot.kernel.web.live import LiveMessage, process_hub

from .test_live_redis import BOUND, hubs, next_message  # noqa: F401 (fixture)


async def test_a_workers_live_updates_reach_an_api_replica_through_redis(
    database,
    settings,
    redis_url,
    service_namespace,
    hubs,  # noqa: F811
) -> None:
    if database.is_sqlite:
        pytest.skip("`allot worker` runs on PostgreSQL only")
    api_replica = await hubs()
    board, inbox = api_replica.subscribe(BOARD_TOPIC), None
    agent_id = uuid.uuid4()
    inbox = api_replica.subscribe(agent_topic(agent_id))
    worker_settings = settings.model_copy(
        update={"redis_url": redis_url, "redis_namespace": service_namespace}
    )
    services = runtime.compose("worker", database, worker_settings)
    assert services.names[0] == "live-hub"
    live_hub = services.get("live-hub")
    live_hub.start()
    try:
        await live_hub.hub.wait_listening(BOUND)
        event = Event(
            id=uuid.uuid4(),
            type=routing_events.AGENT_STATUS_CHANGED,
            aggregate_type="routing.agent",
            aggregate_id=str(agent_id),
            payload={"agent_id": str(agent_id), "status": "away"},
        )
        async with database.reader() as session:
            await publish_live_updates(session, event)
        expected = routing_events.AGENT_STATUS_CHANGED
        assert await next_message(inbox) == LiveMessage("inbox", expected, agent_topic(agent_id))
        assert await next_message(board) == LiveMessage(BOARD_EVENT, expected, BOARD_TOPIC)
    finally:
        live_hub.stop()
    assert process_hub() is None
