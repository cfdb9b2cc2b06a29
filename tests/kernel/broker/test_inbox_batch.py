"""The set-based inbox insert a worker's batch goes through (`Dispatcher.apply_many`): each event
once per consumer, whether a batch holds two copies of a message, some were applied before, or
two workers apply the same batch at the same moment."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

from sqlalchemy import func, select

from allot.kernel.events import ConsumerRegistry, InboxEntry
from allot.kernel.events.dispatcher import Dispatcher
from allot.kernel.events.outbox import Event


def _events(count: int) -> list[Event]:
    return [
        Event(
            id=uuid.uuid4(),
            type="test.thing.happened",
            aggregate_type="t",
            aggregate_id=str(n),
            payload={"n": n},
        )
        for n in range(count)
    ]


async def _inbox_rows(database) -> int:
    async with database.reader() as session:
        return int((await session.execute(select(func.count()).select_from(InboxEntry))).scalar())


async def test_a_batch_with_repeats_and_events_applied_before_applies_each_once(database):
    applied: list[uuid.UUID] = []
    consumers = ConsumerRegistry()

    @consumers.subscribe("test.batch", "test.thing.happened")
    async def record(session, event):
        applied.append(event.id)

    [consumer] = consumers.all()
    dispatcher = Dispatcher(database, consumers)
    events = _events(4)
    assert await dispatcher.apply_many(consumer, [events[1]]) == 1
    # A redelivered copy of event 0 in the same batch, event 1 applied before.
    batch = [events[0], events[1], events[0], events[2], events[3], events[2]]
    assert await dispatcher.apply_many(consumer, batch) == 3
    assert Counter(applied) == Counter({e.id: 1 for e in events})
    assert await _inbox_rows(database) == 4


async def test_two_workers_applying_the_same_batch_at_once_apply_each_event_once(database):
    applied: list[uuid.UUID] = []
    consumers = ConsumerRegistry()

    @consumers.subscribe("test.batch", "test.thing.happened")
    async def record(session, event):
        applied.append(event.id)
        await asyncio.sleep(0)  # let the other unit of work interleave

    [consumer] = consumers.all()
    events = _events(50)
    first, second = Dispatcher(database, consumers), Dispatcher(database, consumers)
    counts = await asyncio.gather(
        first.apply_many(consumer, events), second.apply_many(consumer, events[::-1])
    )
    assert sum(counts) == 50  # neither failed; between them each event once
    assert Counter(applied) == Counter({e.id: 1 for e in events})
    assert await _inbox_rows(database) == 50
