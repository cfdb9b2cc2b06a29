"""Enqueueing a delivery: one row per key whatever repeats it, and nothing sent unless the
transaction that decided to send committed."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from allot.kernel.db.engine import Database
from allot.kernel.delivery import enqueue, erase_recipient
from allot.kernel.delivery.channels.email import message_id_for
from allot.kernel.events import ConsumerRegistry, Dispatcher, publish
from tests.kernel.broker.conftest import eventually
from tests.kernel.delivery.conftest import SENDER, delivery, delivery_rows
from tests.kernel.delivery.servers import SmtpServer

EMAIL = "ivan.petrov@example.ru"
WELCOME = {"subject": "Добро пожаловать", "text": "Здравствуйте, Иван!"}


async def test_the_same_key_twice_is_one_row_and_one_message(database, clock, smtp, make_runner):
    async with database.transaction() as session:
        first = await enqueue(session, "email", "welcome:u1", EMAIL, WELCOME)
    async with database.transaction() as session:
        # A repeat with other content is still the same effect: the first one stands.
        second = await enqueue(
            session, "email", "welcome:u1", "other@example.ru", {"subject": "x", "text": "y"}
        )
    runner = make_runner()

    assert (first, second) == (True, False)
    assert await runner.drain() == 1
    async with database.transaction() as session:  # and after it was delivered
        assert await enqueue(session, "email", "welcome:u1", EMAIL, WELCOME) is False
    assert await runner.drain() == 0

    [message] = smtp.handler.messages
    assert message["To"] == EMAIL
    assert message["Subject"] == WELCOME["subject"]
    assert message.get_content().strip() == WELCOME["text"]
    assert message["Message-ID"] == message_id_for("welcome:u1", "crm.example.ru")
    assert message["X-Allot-Delivery-Key"] == "welcome:u1"
    assert message["From"] == SENDER
    [row] = await delivery_rows(database)
    assert (row.status, row.attempts, row.recipient) == ("delivered", 1, EMAIL)
    assert row.provider_ref == message["Message-ID"]
    assert row.delivered_at == clock.now()


async def test_two_transactions_racing_on_one_key_make_one_row(database, clock):
    """Neither fails with a unique violation: the loser is told it is a repeat."""

    async def enqueue_once(recipient: str) -> bool:
        async with database.transaction() as session:
            return await enqueue(session, "telegram", "race:1", recipient, {"text": "hi"})

    outcomes = await asyncio.gather(*(enqueue_once(r) for r in ("101", "202", "303")))

    assert sorted(outcomes) == [False, False, True]
    assert len(await delivery_rows(database)) == 1


async def test_a_repeated_event_through_the_dispatcher_sends_one_message(
    database: Database, clock, smtp: SmtpServer, make_runner
):
    """The consumer runs twice for one business fact (two events about the same lead, as an
    upstream system that retries would cause): the key makes the second a repeat. The runner
    is woken by the commit (its idle poll is a minute long)."""
    consumers = ConsumerRegistry()
    outcomes: list[bool] = []

    @consumers.subscribe("test.notify_assignee", "test.lead.assigned")
    async def notify(session, event):
        key = f"test.lead.assigned:{event.payload['lead_id']}:email"
        text = {"subject": "Новая заявка", "text": f"Заявка {event.payload['lead_id']}"}
        outcomes.append(await enqueue(session, "email", key, event.payload["to"], text))

    lead_id = str(uuid.uuid4())
    for _ in range(2):
        async with database.transaction() as session:
            payload = {"lead_id": lead_id, "to": EMAIL}
            await publish(session, type="test.lead.assigned", aggregate_type="test.lead",
                          aggregate_id=lead_id, payload=payload)  # fmt: skip
    runner = make_runner(idle_poll_seconds=60.0)
    runner.start()
    try:
        assert await Dispatcher(database, consumers).drain() == 2

        async def sent() -> bool:
            return smtp.handler.count() >= 1

        await eventually(sent, 20.0, "the woken runner sending the message")
    finally:
        await runner.stop()

    assert outcomes == [True, False]
    assert smtp.handler.keys() == [f"test.lead.assigned:{lead_id}:email"]
    assert (await delivery(database, smtp.handler.keys()[0])).status == "delivered"


async def test_a_delivery_of_a_rolled_back_transaction_is_never_sent(
    database, clock, smtp, make_runner
):
    with pytest.raises(RuntimeError):
        async with database.transaction() as session:
            assert await enqueue(session, "email", "rolled-back:1", EMAIL, WELCOME)
            raise RuntimeError("the business rule failed after the decision to send")

    assert await make_runner().drain() == 0
    assert await delivery_rows(database) == []
    assert smtp.handler.data_attempts == 0
    async with database.transaction() as session:  # the key was never taken
        assert await enqueue(session, "email", "rolled-back:1", EMAIL, WELCOME)


@pytest.mark.parametrize(
    ("channel", "recipient", "payload", "complaint"),
    [
        ("sms", "+79123456789", {"text": "x"}, "unknown delivery channel"),
        ("email", EMAIL, {"text": "no subject"}, "needs text fields subject"),
        ("telegram", "", {"text": "x"}, "needs a recipient"),
    ],
)
async def test_a_delivery_the_channel_cannot_send_is_refused_in_the_callers_transaction(
    database, channel, recipient, payload, complaint
):
    with pytest.raises(ValueError, match=complaint):
        async with database.transaction() as session:
            await enqueue(session, channel, "bad:1", recipient, payload)
    assert await delivery_rows(database) == []


async def test_erasing_a_recipient_blanks_their_deliveries_and_stops_the_unsent(
    database, clock, smtp, make_runner
):
    """Erasure keeps the keys (a repeat is still recognised) but no address or text of the
    person: a delivered row keeps its status, an unsent one is never sent."""
    async with database.transaction() as session:
        await enqueue(session, "email", "welcome:u1", EMAIL, WELCOME)
    assert await make_runner().drain() == 1
    async with database.transaction() as session:
        await enqueue(session, "email", "reminder:u1", EMAIL, {"subject": "s", "text": "t"})
        await enqueue(session, "email", "welcome:u2", "maria@example.ru", WELCOME)
        assert await erase_recipient(session, EMAIL) == 2

    assert await make_runner().drain() == 1  # only Maria's
    assert [m["To"] for m in smtp.handler.messages] == [EMAIL, "maria@example.ru"]
    rows = {row.key: row for row in await delivery_rows(database)}
    assert (rows["welcome:u1"].status, rows["reminder:u1"].status) == ("delivered", "dead")
    for key in ("welcome:u1", "reminder:u1"):
        assert rows[key].recipient == "erased"
        assert EMAIL not in str(rows[key].payload)
        assert "Иван" not in str(rows[key].payload)
    assert rows["welcome:u2"].recipient == "maria@example.ru"
    async with database.transaction() as session:
        assert await enqueue(session, "email", "reminder:u1", EMAIL, WELCOME) is False
