"""Concurrent `POST /api/v1/leads` taken in together (group commit): each request gets the
answer and the records it would get alone."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest

from allot.contexts.customers import events as customer_events
from allot.contexts.leads import events, group_intake

from .helpers import activities, audit_of, caller, events_of, lead_body, lead_desk, stored


@pytest.fixture
async def manager(database):
    return await caller(database, "manager")


async def post(client, headers, request_id: str, **overrides):
    return await client.post(
        "/api/v1/leads",
        json=lead_body(**overrides),
        headers={**headers, "X-Request-Id": request_id},
    )


async def in_one_batch(database, requests):
    """Send the requests while the group commit is held, so they make one batch."""
    group = group_intake.batcher(database)
    batches = group.batches
    async with group.held():
        tasks = [asyncio.ensure_future(request) for request in requests]
        while group.waiting() < len(tasks):
            await asyncio.sleep(0)  # each request runs up to the hand-over
    responses = await asyncio.gather(*tasks)
    assert group.batches == batches + 1
    return responses


async def test_concurrent_leads_are_batched_spread_and_recorded_per_request(
    client, database, clock, manager
):
    agents = await lead_desk(database, agents=3, capacity=10)
    responses = await in_one_batch(database, [post(client, manager, f"req-{n}") for n in range(12)])
    assert [r.status_code for r in responses] == [201] * 12, responses[0].text
    created = [r.json() for r in responses]
    per_agent = Counter(lead["assignee_id"] for lead in created)
    assert per_agent == {str(a.id): 4 for a in agents}  # least loaded, as one by one

    lead_events = {e.aggregateid: e for e in await events_of(database, events.LEAD_CREATED)}
    for n, lead in enumerate(created):
        lead_id = uuid.UUID(lead["id"])
        [entry] = await audit_of(database, lead_id)
        assert entry.request_id == f"req-{n}"
        assert lead_events[str(lead_id)].headers["correlation_id"] == f"req-{n}"
        kinds = [a.kind for a in await activities(database, lead_id)]
        assert kinds == ["created", "assigned"]
        assert (await stored(database, lead_id)).assignee_id == uuid.UUID(lead["assignee_id"])
    cards = await events_of(database, customer_events.CUSTOMER_CREATED)
    card_request = {e.aggregateid: e.headers["correlation_id"] for e in cards}
    assert {card_request[lead["customer_id"]] for lead in created} == {
        f"req-{n}" for n in range(12)
    }


async def test_duplicates_within_a_batch_and_against_stored_leads_are_409s(
    client, database, clock, manager
):
    await lead_desk(database, agents=1, capacity=10)
    first = await post(client, manager, "req-stored", external_id="crm-1")
    assert first.status_code == 201
    responses = await in_one_batch(
        database,
        [
            post(client, manager, "req-a", external_id="crm-2"),
            post(client, manager, "req-b", external_id="crm-2"),
            post(client, manager, "req-c", external_id="crm-1"),
            post(client, manager, "req-d", external_id="crm-3"),
        ],
    )
    codes = [r.status_code for r in responses]
    assert codes == [201, 409, 409, 201]
    assert responses[1].json()["existing_id"] == responses[0].json()["id"]
    assert responses[2].json()["existing_id"] == first.json()["id"]
    # Nothing of a refused lead was written: two leads of this batch, two work items.
    created = await events_of(database, events.LEAD_CREATED)
    assert len(created) == 3


async def test_one_person_in_two_concurrent_leads_gets_one_card(client, database, clock, manager):
    await lead_desk(database, agents=1, capacity=10)
    person = {"name": "Ольга Смирнова", "phone": "+7 (915) 123-45-67"}
    responses = await in_one_batch(
        database,
        [
            post(client, manager, "req-1", customer=person),
            post(client, manager, "req-2", customer={**person, "phone": "89151234567"}),
        ],
    )
    assert [r.status_code for r in responses] == [201, 201]
    assert responses[0].json()["customer_id"] == responses[1].json()["customer_id"]
