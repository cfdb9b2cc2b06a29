"""While the broker is away: one warning per connection when it goes, one line when it is back,
reconnect attempts with backoff and no log line each, nothing lost, no password in the logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys

import pytest
from sqlalchemy import func, select

from allot.kernel.events import OutboxEvent
from allot.kernel.events.broker import BrokerWorker, Relay
from allot.kernel.logging import configure_logging
from tests.kernel.broker.conftest import eventually, publish_events

UNREACHABLE = "broker unreachable; reconnecting with backoff"
BACK = "broker reachable again"


@pytest.fixture(autouse=True)
def restore_logging():
    yield
    # Point the writers back at the real stderr: capsys closes the stream they captured into.
    with contextlib.redirect_stderr(sys.__stderr__):
        configure_logging("INFO", json=True)


class Logs:
    """JSON log lines written since it was made. Made inside the test: capsys swaps sys.stderr
    per test phase, and the log writers bind the stream they were configured with."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        configure_logging("INFO", json=True)
        self.capsys = capsys
        self.text = ""

    def lines(self) -> list[dict]:
        self.text += self.capsys.readouterr().err
        found = []
        for line in self.text.splitlines():
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found

    def named(self, event: str) -> list[dict]:
        return [line for line in self.lines() if line.get("event") == event]

    def warnings(self) -> list[dict]:
        return [line for line in self.lines() if line.get("level") in ("warning", "error")]


async def _dispatched(database) -> int:
    async with database.reader() as session:
        return int(
            (
                await session.execute(
                    select(func.count())
                    .select_from(OutboxEvent)
                    .where(OutboxEvent.status == "dispatched")
                )
            ).scalar_one()
        )


async def test_an_outage_logs_one_warning_and_one_recovery_per_connection_and_loses_nothing(
    database, bus_settings, consumers, effects, proxy, capsys
):
    @consumers.subscribe("tally.counter", "test.thing.happened")
    async def count(session, event):
        await effects.record(session, event.id, "tally.counter")

    through_proxy = bus_settings.model_copy(
        update={"broker_url": proxy.url_through(bus_settings.broker_url)}
    )
    relay = Relay(database, through_proxy, consumers=consumers)
    worker = BrokerWorker(database, through_proxy, consumers=consumers)
    logs = Logs(capsys)
    await relay.start()
    await worker.start()
    try:
        before = await publish_events(database, 5)

        async def applied(n: int) -> bool:
            return await effects.count() == n

        await eventually(lambda: applied(5), what="5 effects before the outage")
        assert logs.warnings() == []

        proxy.cut()
        await eventually(
            lambda: _both(relay._availability.down, worker._availability.down),
            what="both connections noticed the outage",
        )
        during = await publish_events(database, 7)  # the API keeps writing meanwhile
        # Several attempts fail while the broker is away, silently.
        await eventually(
            lambda: _both(relay._availability.failures >= 3, worker._availability.failures >= 3),
            what="three failed attempts each",
        )
        warned = logs.warnings()
        roles = sorted(_role(line.get("process", "")) for line in warned)
        assert roles == sorted(
            _role(name) for name in (relay._availability.name, worker._availability.name)
        ), warned
        assert roles[0] != roles[1]
        assert {line["event"] for line in warned} == {UNREACHABLE}
        assert all(line["error"] for line in warned)  # the error's class, e.g. ConnectionError
        assert await effects.count() == 5
        assert await _dispatched(database) == 5

        proxy.restore()
        await eventually(lambda: applied(12), what="the outage's events applied after it")
        await eventually(
            lambda: _logged(logs, BACK, 2), what="both connections logged that they are back"
        )
    finally:
        await worker.stop()
        await relay.stop()

    applied_ids = sorted(event_id for event_id, *_ in await effects.rows())
    assert applied_ids == sorted(str(i) for i in before + during)  # none lost, none twice
    back = {_role(line["process"]): line for line in logs.named(BACK)}
    assert set(back) == {_role(relay._availability.name), _role(worker._availability.name)}
    assert all(line["away_s"] >= 0 for line in back.values())
    # The relay says what the outage left to relay (the 7 events, or fewer if already out).
    assert 0 <= back[_role(relay._availability.name)]["outbox_pending"] <= 7
    assert len(logs.named(UNREACHABLE)) == 2  # and nothing more after the broker was back
    assert [w for w in logs.warnings() if w["event"] != UNREACHABLE] == []
    assert through_proxy.broker_url not in logs.text  # guest:guest@…: the password
    assert ":guest@" not in logs.text
    assert ":***@" in logs.text  # the masked URL in the warning


async def test_a_relay_that_never_reaches_the_broker_warns_once_without_the_password(
    database, bus_settings, consumers, proxy, capsys
):
    """Refused before any authentication, so a password of the test's own shows whether one
    ever reaches a log line; and stopping does not wait for the broker."""

    @consumers.subscribe("tally.counter", "test.thing.happened")
    async def count(session, event):  # pragma: no cover - nothing is delivered
        pass

    proxy.cut()
    secret = "s3cret-never-logged-4711"
    url = proxy.url_through(bus_settings.broker_url).replace(":guest@", f":{secret}@")
    relay = Relay(
        database, bus_settings.model_copy(update={"broker_url": url}), consumers=consumers
    )
    logs = Logs(capsys)
    await relay.start()
    try:
        await publish_events(database, 3)
        await eventually(
            lambda: _true(relay._availability.failures >= 4), what="four failed attempts"
        )
    finally:
        await asyncio.wait_for(relay.stop(), timeout=30)
    [warning] = logs.warnings()
    assert warning["event"] == UNREACHABLE
    assert warning["broker"].startswith("amqp://guest:***@127.0.0.1:")
    assert secret not in logs.text
    assert logs.named(BACK) == []
    async with database.reader() as session:
        statuses = (await session.execute(select(OutboxEvent.status))).scalars().all()
    assert statuses == ["pending"] * 3


async def test_stopping_during_an_outage_does_not_wait_for_the_broker(
    database, bus_settings, consumers, proxy, capsys
):
    """A batch claimed while the broker is away waits for it; a stop meanwhile releases the
    batch (still pending, published by whoever relays next) instead of hanging."""

    @consumers.subscribe("tally.counter", "test.thing.happened")
    async def count(session, event):  # pragma: no cover - nothing is delivered
        pass

    through_proxy = bus_settings.model_copy(
        update={"broker_url": proxy.url_through(bus_settings.broker_url)}
    )
    relay = Relay(database, through_proxy, consumers=consumers)
    logs = Logs(capsys)
    await relay.start()
    try:
        await eventually(lambda: _true(relay.connected.is_set()), what="relay connected")
        proxy.cut()
        await eventually(lambda: _true(relay._availability.down), what="outage noticed")
        await publish_events(database, 4)
        await eventually(lambda: _claimed(database, 4), what="the relay claimed the batch")
    finally:
        await asyncio.wait_for(relay.stop(), timeout=30)
    async with database.reader() as session:
        rows = (await session.execute(select(OutboxEvent.status, OutboxEvent.claimed_until))).all()
    assert rows == [("pending", None)] * 4
    # The round the stop cut short is the outage's doing: no second warning.
    assert [line["event"] for line in logs.warnings()] == [UNREACHABLE]


async def _claimed(database, n: int) -> bool:
    async with database.reader() as session:
        claimed = (
            await session.execute(
                select(func.count())
                .select_from(OutboxEvent)
                .where(OutboxEvent.claimed_until.is_not(None))
            )
        ).scalar_one()
    return int(claimed) == n


async def _both(a: bool, b: bool) -> bool:
    return a and b


async def _true(value: bool) -> bool:
    return value


async def _logged(logs: Logs, event: str, n: int) -> bool:
    return len(logs.named(event)) >= n


def _role(connection_name: object) -> str:
    """A connection's role ("allot-relay", "allot-worker"): the rest of its name, the test's
    namespace with its digits, may be masked in log lines like a phone number."""
    return str(connection_name).split(" ", 1)[0]
