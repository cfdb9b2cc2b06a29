"""A publisher's `partition_key`: stored in the event headers, routed on by the relay, and given
by the leads context as the customer's id (a client's leads handled in order)."""

from __future__ import annotations

import uuid
import zlib

from sqlalchemy import select

from allot.kernel.events import OutboxEvent, publish
from allot.kernel.events.broker import Relay, Topology
from allot.kernel.events.outbox import NewEvent, publish_many
from tests.contexts.leads.helpers import new_lead
from tests.kernel.broker.conftest import eventually
from tests.kernel.broker.test_relay_worker import _queue_depth

PARTITIONS = 4


def _expected_partition(key: str) -> int:
    return zlib.crc32(key.encode()) % PARTITIONS


async def _headers_by_aggregate(database) -> dict[str, list[dict]]:
    async with database.reader() as session:
        rows = (await session.execute(select(OutboxEvent))).scalars().all()
    found: dict[str, list[dict]] = {}
    for row in rows:
        found.setdefault(row.aggregateid, []).append(dict(row.headers))
    return found


async def test_publish_and_publish_many_store_the_partition_key_in_the_headers(database):
    async with database.transaction() as session:
        await publish(
            session,
            type="test.thing.happened",
            aggregate_type="t",
            aggregate_id="a-1",
            payload={},
            partition_key="client-7",
        )
        await publish(session, type="test.thing.happened", aggregate_type="t",
                      aggregate_id="a-2", payload={})  # fmt: skip
        await publish_many(
            session,
            [
                NewEvent("test.thing.happened", "t", "a-3", {}, partition_key=uuid.UUID(int=7)),
                NewEvent("test.thing.happened", "t", "a-4", {}),
            ],
        )
    headers = await _headers_by_aggregate(database)
    assert headers["a-1"][0]["partition_key"] == "client-7"
    assert "partition_key" not in headers["a-2"][0]
    assert headers["a-3"][0]["partition_key"] == str(uuid.UUID(int=7))
    assert "partition_key" not in headers["a-4"][0]
    # The request's headers are all still there.
    assert {"correlation_id", "actor_kind"} <= set(headers["a-1"][0])


async def test_events_of_one_partition_key_land_in_one_partition_queue(
    database, bus_settings, consumers, rabbitmq_url
):
    settings = bus_settings.model_copy(
        update={"broker_ordered_groups": "keyed", "broker_partitions": PARTITIONS}
    )

    @consumers.subscribe("keyed.tracker", "test.thing.happened")
    async def track(session, event):  # pragma: no cover - no worker runs here
        pass

    # Eight aggregates (they would spread over the partitions), one client.
    aggregates = [f"lead-{n}" for n in range(8)]
    assert len({_expected_partition(a) for a in aggregates}) > 1
    async with database.transaction() as session:
        for aggregate in aggregates:
            await publish(
                session,
                type="test.thing.happened",
                aggregate_type="t",
                aggregate_id=aggregate,
                payload={},
                partition_key="client-42",
            )
    relay = Relay(database, settings, consumers=consumers)
    await relay.start()
    try:
        await eventually(lambda: _published(relay, 8), what="8 events relayed")
    finally:
        await relay.stop()
    topology = Topology.from_settings(settings)
    depths = [
        await _queue_depth(rabbitmq_url, topology.partition_queue("keyed", p))
        for p in range(PARTITIONS)
    ]
    expected = [0] * PARTITIONS
    expected[_expected_partition("client-42")] = 8
    assert depths == expected


async def _published(relay: Relay, count: int) -> bool:
    return relay.published >= count


async def test_two_leads_of_one_customer_share_a_partition(database):
    phone = "+7 915 321-00-01"
    first = await new_lead(database, customer_phone=phone)
    second = await new_lead(database, customer_phone=phone)
    other = await new_lead(database, customer_phone="+7 915 321-00-02")
    assert first.customer_id == second.customer_id != other.customer_id

    headers = await _headers_by_aggregate(database)
    for lead, customer in ((first, first.customer_id), (second, first.customer_id),
                           (other, other.customer_id)):  # fmt: skip
        written = headers[str(lead.id)]
        assert written, "the lead wrote events"
        assert {h.get("partition_key") for h in written} == {str(customer)}
    assert _expected_partition(str(first.customer_id)) == _expected_partition(
        headers[str(second.id)][0]["partition_key"]
    )
