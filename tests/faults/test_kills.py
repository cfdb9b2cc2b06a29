"""kill -9 in the middle of the work: the relay, a worker and an API process during a stream of
10,000 events, and the timers process while timers fire. Real processes (tests/faults/
fleet_harness.py runs the real `allot`), real PostgreSQL, RabbitMQ and Redis.

What is counted, not sampled: the harness's consumer `faultstest.count` writes one row per event
it applies into `faults_effects`, a table without a unique key, so an event applied twice shows
as two rows whatever the inbox did. The expected set of causes comes from the test itself (the
ids `publish` returned to it, the leads the API answered for), never from the code under test.

Every kill lands mid-stream by construction, not by timing: the writer keeps at most `BACKLOG`
events ahead of the effects and is held at a fixed count until the killed process is back, so
when a kill happens thousands of events are still to come and some are always in flight.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

from allot.kernel.clock import utcnow
from allot.kernel.db.engine import Database
from allot.kernel.events import publish
from allot.kernel.timers import schedule
from tests.faults.conftest import (
    Fleet,
    LeadPusher,
    admin_token,
    new_external_ids,
    rows,
    scalar,
    timed,
    wait_for,
)
from tests.faults.fleet_harness import CONSUMER, GROUP, LEAD_CREATED, PING, TICK

EVENTS = 10_000
PER_TRANSACTION = 50
BACKLOG = 1_500  # events written but not yet applied, at most
LEADS = 240
FLOW_SECONDS = 180.0  # any one phase of the stream; generous for a loaded 2-core machine


async def effects(database: Database, kind: str) -> Counter[str]:
    """How many effect rows each cause of this kind has."""
    found = await rows(
        database, "SELECT cause, count(*) FROM faults_effects WHERE kind = :kind GROUP BY cause",
        kind=kind,
    )  # fmt: skip
    return Counter(dict(found))


async def effect_count(database: Database, kind: str, pid: int | None = None) -> int:
    sql = "SELECT count(*) FROM faults_effects WHERE kind = :kind"
    if pid is not None:
        return int(await scalar(database, f"{sql} AND pid = :pid", kind=kind, pid=pid))
    return int(await scalar(database, sql, kind=kind))


class PingWriter:
    """Writes `total` events in transactions of `per_transaction` through `publish`, keeping at
    most `backlog` of them unapplied, and waiting at a hold until its event is set."""

    def __init__(self, database: Database, total: int, per_transaction: int, backlog: int) -> None:
        self.database = database
        self.total = total
        self.per_transaction = per_transaction
        self.backlog = backlog
        self.ids: list[str] = []
        self.holds: list[tuple[int, asyncio.Event]] = []

    def hold(self, at: int, event: asyncio.Event) -> None:
        self.holds.append((at, event))

    async def _caught_up(self) -> bool:
        return len(self.ids) - await effect_count(self.database, PING) <= self.backlog

    async def run(self) -> None:
        while len(self.ids) < self.total:
            for at, event in self.holds:
                if len(self.ids) >= at:
                    await event.wait()
            await wait_for(self._caught_up, FLOW_SECONDS, "the consumers catching up")
            async with self.database.transaction() as session:
                batch = [
                    await publish(session, type=PING, aggregate_type="faultstest",
                                  aggregate_id=str(len(self.ids) + n), payload={"n": n})
                    for n in range(min(self.per_transaction, self.total - len(self.ids)))
                ]  # fmt: skip
            self.ids += [str(event_id) for event_id in batch]


async def test_kill_9_of_the_relay_a_worker_and_an_api_mid_stream_applies_every_event_once(
    fleet: Fleet, fleet_db: Database
) -> None:
    timings: dict[str, float] = {}
    with timed(timings, "start"):
        relay = fleet.start("relay")
        workers = [fleet.start("worker", "--consumers", GROUP) for _ in range(2)]
        api = fleet.start("api")
        token = await admin_token(fleet.database_url)
        for role in (relay, api):
            await role.started()
        for worker in workers:
            await worker.consuming()
    writer = PingWriter(fleet_db, EVENTS, PER_TRANSACTION, BACKLOG)
    relay_back, worker_back, api_back = asyncio.Event(), asyncio.Event(), asyncio.Event()
    writer.hold(4_000, relay_back)
    writer.hold(6_500, worker_back)
    writer.hold(8_500, api_back)
    writing = asyncio.create_task(writer.run())
    running = [relay, *workers]

    async def pings_applied(at_least: int) -> bool:
        assert not writing.done() or writing.exception() is None, writing.exception()
        return await effect_count(fleet_db, PING) >= at_least

    # 1. The relay, while it publishes: the batch it holds (claimed; maybe published, even
    #    confirmed) is neither marked nor released; the next relay takes it when the lease ends.
    with timed(timings, "relay"):
        await wait_for(lambda: pings_applied(2_000), FLOW_SECONDS, "2,000 events", *running)
        dispatched_before = await _outbox_count(fleet_db, "dispatched")
        relay.kill9()
        left_claimed = await scalar(
            fleet_db, "SELECT count(*) FROM kernel_outbox WHERE status = 'pending' "
            "AND claimed_until IS NOT NULL",
        )  # fmt: skip
        relay = fleet.restart(relay)
        await relay.started()
        relay_back.set()
        running = [relay, *workers]
        await wait_for(lambda: pings_applied(4_500), FLOW_SECONDS, "4,500 events", *running)
    assert dispatched_before > 0

    # 2. One of the two workers, with a prefetch window of unacked (some committed) messages.
    with timed(timings, "worker"):
        victim, survivor = workers
        await wait_for(
            lambda: _pid_applied(fleet_db, victim.pid), FLOW_SECONDS, "the victim working", victim
        )
        victim.kill9()
        killed_worker_effects = await effect_count(fleet_db, PING, victim.pid)
        restarted = fleet.restart(victim)
        await restarted.consuming()
        worker_back.set()
        workers = [survivor, restarted]
        running = [relay, *workers]
        await wait_for(lambda: _pid_applied(fleet_db, restarted.pid), FLOW_SECONDS,
                       "the restarted worker applying events", *running)  # fmt: skip

    # 3. The API, with requests in flight (leads whose events the same consumer counts).
    with timed(timings, "api"):
        current = [api]
        pusher = LeadPusher(
            lambda: [current[0].base_url], token, new_external_ids(LEADS), clients=4
        )
        pushing = asyncio.create_task(pusher.run())
        await wait_for(lambda: pusher.answered >= LEADS // 3 and pusher.in_flight >= 2,
                       FLOW_SECONDS, "leads flowing", *running, api)  # fmt: skip
        api.kill9()
        current[0] = fleet.restart(api)
        await current[0].started()
        api_back.set()
        await asyncio.wait_for(pushing, FLOW_SECONDS)
        await asyncio.wait_for(writing, FLOW_SECONDS)

    # Everything written is applied: wait for the counts, then stop the fleet cleanly.
    lead_events = await _lead_created_events(fleet_db)
    expected = set(writer.ids) | set(lead_events)

    async def all_applied() -> bool:
        return await scalar(
            fleet_db, "SELECT count(DISTINCT cause) FROM faults_effects WHERE kind <> :tick",
            tick=TICK,
        ) >= len(expected) and await _outbox_count(fleet_db, "pending") == 0  # fmt: skip

    with timed(timings, "drain"):
        await wait_for(all_applied, FLOW_SECONDS, "every event applied", *running)
        for role in (relay, *workers, current[0]):
            assert await role.stop() == 0, role.tail()
    print(f"\nkills: {timings}; relay left {left_claimed} claimed rows; killed worker applied "
          f"{killed_worker_effects}; API kill: {pusher.failed_tries} failed tries, "
          f"{pusher.conflicts} answered 409; CPU: {fleet.cpu_report()}")  # fmt: skip

    # Every event's effect exactly once: the test's own ids, counted per id.
    pings = await effects(fleet_db, PING)
    assert len(writer.ids) == EVENTS == len(set(writer.ids))
    assert set(pings) == set(writer.ids), "an event's effect is missing, or a stranger's is there"
    assert [cause for cause, n in pings.items() if n != 1] == [], "an effect applied twice"
    leads = await effects(fleet_db, LEAD_CREATED)
    assert leads == Counter(dict.fromkeys(lead_events, 1))
    # Every lead the clients were told about exists once; a lead whose answer the kill cut
    # off was found again by the retry (409 with `existing_id`), never created twice.
    stored = await rows(fleet_db, "SELECT external_id, CAST(id AS TEXT) FROM leads_leads")
    assert len(stored) == LEADS == len(lead_events) == len(dict(stored))
    assert {e: str(uuid.UUID(i)) for e, i in pusher.lead_ids.items()} == dict(stored)
    assert pusher.failed_tries >= 1, "no request was cut by the kill"
    assert pusher.server_errors == []
    # The outbox is fully dispatched, the group's queues are empty, the inbox matches.
    assert await _outbox_count(fleet_db, "dispatched") == await scalar(
        fleet_db, "SELECT count(*) FROM kernel_outbox"
    )
    depths = await fleet.queue_depths()
    assert depths[fleet.topology.queue(GROUP)] == 0
    assert depths[fleet.topology.dead_queue(GROUP)] == 0
    inbox = await scalar(
        fleet_db, "SELECT count(*) FROM kernel_inbox WHERE consumer = :c", c=CONSUMER
    )
    assert inbox == len(expected)
    # Each killed process had done part of the work, and so did each one started after it.
    assert killed_worker_effects > 0
    assert await effect_count(fleet_db, PING, restarted.pid) > 0


async def _outbox_count(database: Database, status: str) -> int:
    return int(
        await scalar(database, "SELECT count(*) FROM kernel_outbox WHERE status = :s", s=status)
    )


async def _pid_applied(database: Database, pid: int) -> bool:
    return await effect_count(database, PING, pid) > 0


async def _lead_created_events(database: Database) -> list[str]:
    found = await rows(
        database, "SELECT CAST(id AS TEXT) FROM kernel_outbox WHERE type = :t", t=LEAD_CREATED
    )
    return [str(uuid.UUID(row[0])) for row in found]


# -- timers ----------------------------------------------------------------------------------

TIMERS = 150
STUCK_AT = 60  # this timer's first try waits (its transaction open) until the process is killed


async def test_kill_9_of_timers_while_firing_fires_each_due_timer_once_after_restart(
    fleet: Fleet, fleet_db: Database
) -> None:
    runner = fleet.start("timers")
    await runner.started()

    async with fleet_db.transaction() as session:
        # Due in the past, in order; each takes 5 ms so the runner is always inside one.
        first_due = utcnow() - timedelta(seconds=30)
        timer_ids = [
            str(await schedule(session, TICK, first_due + timedelta(milliseconds=n),
                               {"seconds": 0.005} | _stuck(n)))
            for n in range(TIMERS)
        ]  # fmt: skip
    stuck = timer_ids[STUCK_AT]
    stuck_marker = fleet.markers / f"timer-{stuck}"

    await wait_for(stuck_marker.exists, FLOW_SECONDS, "the stuck timer firing", runner)
    fired_by_killed = await effect_count(fleet_db, TICK, runner.pid)
    runner.kill9()
    assert 0 < fired_by_killed < TIMERS
    restarted = fleet.restart(runner)
    await restarted.started()
    await wait_for(
        lambda: _all_timers_fired(fleet_db), FLOW_SECONDS, "every timer fired", restarted
    )
    assert await restarted.stop() == 0, restarted.tail()

    fired = await effects(fleet_db, TICK)
    assert fired == Counter(dict.fromkeys(timer_ids, 1)), "a timer lost or fired twice"
    # The timer whose transaction the kill cut was fired by the next process, and its killed
    # try left no trace (its `attempts` increment rolled back with it).
    by_pid = dict(await rows(fleet_db, "SELECT cause, pid FROM faults_effects WHERE cause = :c",
                             c=stuck))  # fmt: skip
    assert by_pid == {stuck: restarted.pid}
    states = await rows(fleet_db, "SELECT status, attempts, count(*) FROM kernel_timers "
                        "WHERE kind = :k GROUP BY status, attempts", k=TICK)  # fmt: skip
    assert [tuple(row) for row in states] == [("fired", 1, TIMERS)]


def _stuck(n: int) -> dict[str, Any]:
    return {"first_attempt_seconds": 120} if n == STUCK_AT else {}


async def _all_timers_fired(database: Database) -> bool:
    return await effect_count(database, TICK) >= TIMERS
