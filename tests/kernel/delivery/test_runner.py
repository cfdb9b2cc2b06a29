"""The runner's outcomes: temporary failures retried after backoff (or Telegram's retry_after)
by moving the clock, permanent ones dead at once until retried, leases that run out re-sent,
and no try recorded over another runner's newer claim."""

from __future__ import annotations

from datetime import timedelta

import pytest

from allot.kernel.config import Settings
from allot.kernel.delivery import DeliveryRunner, enqueue, store
from allot.kernel.delivery.channels.email import EmailChannel
from allot.kernel.runtime import compose
from tests.kernel.delivery.conftest import SENDER, delivery, email_channel_for
from tests.kernel.delivery.servers import CHAT_NOT_FOUND, free_port, too_many_requests

EMAIL = "maria@example.ru"
LETTER = {"subject": "Заявка назначена", "text": "Вам назначена заявка."}


async def _enqueue(database, channel: str, key: str, recipient: str, payload: dict) -> None:
    async with database.transaction() as session:
        assert await enqueue(session, channel, key, recipient, payload)


async def test_smtp_451_is_retried_after_backoff_and_delivered_once(
    database, clock, smtp, make_runner
):
    smtp.handler.data_replies.append("451 4.3.0 Try again later")
    await _enqueue(database, "email", "k:451", EMAIL, LETTER)
    runner = make_runner(retry_base_seconds=30.0)

    assert await runner.run_once() == 1
    row = await delivery(database, "k:451")
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.last_error == "DATA refused: 451 4.3.0 Try again later"
    assert clock.now() < row.next_attempt_at <= clock.now() + timedelta(seconds=30)
    assert await runner.run_once() == 0  # not due yet
    assert smtp.handler.data_attempts == 1

    clock.advance(30)
    assert await runner.run_once() == 1
    row = await delivery(database, "k:451")
    assert (row.status, row.attempts) == ("delivered", 2)
    assert smtp.handler.data_attempts == 2
    assert smtp.handler.keys() == ["k:451"]


async def test_smtp_550_is_dead_at_once_and_a_retry_delivers_it(database, clock, smtp, make_runner):
    smtp.handler.refuse.add(EMAIL)
    await _enqueue(database, "email", "k:550", EMAIL, LETTER)
    runner = make_runner()

    assert await runner.run_once() == 1
    row = await delivery(database, "k:550")
    assert (row.status, row.attempts) == ("dead", 1)
    assert row.last_error.startswith("recipient refused: 550 5.1.1")
    assert EMAIL not in row.last_error  # the server quoted the address; it is left out
    clock.advance(timedelta(days=1))
    assert await runner.run_once() == 0

    smtp.handler.refuse.clear()  # the mailbox exists now
    async with database.transaction() as session:
        assert await store.retry(session, "k:550") is not None
        assert await store.retry(session, "k:550") is None  # pending: nothing dead to retry
    assert await runner.run_once() == 1
    row = await delivery(database, "k:550")
    assert (row.status, row.attempts) == ("delivered", 1)
    assert smtp.handler.keys() == ["k:550"]


async def test_telegram_429_is_retried_exactly_when_telegram_said(
    database, clock, telegram, make_runner
):
    telegram.state.replies.append(too_many_requests(7))
    await _enqueue(database, "telegram", "k:429", "424242", {"text": "Новая заявка"})
    runner = make_runner()

    assert await runner.run_once() == 1
    row = await delivery(database, "k:429")
    assert (row.status, row.next_attempt_at) == ("pending", clock.now() + timedelta(seconds=7))
    assert row.last_error == "Telegram 429: Too Many Requests: retry after 7"
    clock.advance(6)
    assert await runner.run_once() == 0
    clock.advance(1)
    assert await runner.run_once() == 1

    row = await delivery(database, "k:429")
    assert (row.status, row.attempts, row.provider_ref) == ("delivered", 2, "1001")
    assert telegram.state.sent == [{"chat_id": "424242", "text": "Новая заявка"}]
    assert len(telegram.state.calls) == 2


async def test_telegram_400_chat_not_found_is_dead_and_not_retried(
    database, clock, telegram, make_runner
):
    telegram.state.replies.append(CHAT_NOT_FOUND)
    await _enqueue(database, "telegram", "k:400", "-100123", {"text": "hi"})
    runner = make_runner()

    assert await runner.run_once() == 1
    clock.advance(timedelta(hours=5))
    assert await runner.run_once() == 0

    row = await delivery(database, "k:400")
    assert (row.status, row.attempts) == ("dead", 1)
    assert row.last_error == "Telegram 400: Bad Request: chat not found"
    assert len(telegram.state.calls) == 1


async def test_a_server_that_stays_away_kills_the_delivery_after_max_attempts(
    database, clock, make_runner
):
    nobody = EmailChannel(host="127.0.0.1", port=free_port(), sender=SENDER, security="none")
    await _enqueue(database, "email", "k:away", EMAIL, LETTER)
    runner = make_runner(channels={"email": nobody}, max_attempts=3, retry_base_seconds=10.0)

    for attempt in (1, 2, 3):
        assert await runner.run_once() == 1
        row = await delivery(database, "k:away")
        assert row.attempts == attempt
        assert "ConnectionRefusedError" in row.last_error or "SMTPConnectError" in row.last_error
        clock.advance(10 * 2**attempt)
    assert row.status == "dead"
    assert await runner.run_once() == 0


async def test_a_channel_this_process_lacks_leaves_the_delivery_dead_saying_which_setting(
    database, clock, smtp, make_runner
):
    await _enqueue(database, "telegram", "k:unconfigured", "4242", {"text": "hi"})
    runner = make_runner(channels={"email": email_channel_for(smtp)})

    assert await runner.run_once() == 1
    row = await delivery(database, "k:unconfigured")
    assert row.status == "dead"
    assert "ALLOT_TELEGRAM_BOT_TOKEN" in row.last_error


async def test_a_lease_that_ran_out_is_sent_again_and_a_live_one_is_not(
    database, clock, smtp, make_runner
):
    """A runner claimed the row and died before any outcome (the in-process half of
    tests/faults/test_deliveries.py): nobody touches the row during its lease; after it, the
    next round sends it (again, should the first have reached the server)."""
    await _enqueue(database, "email", "k:lease", EMAIL, LETTER)
    runner = make_runner(lease_seconds=60.0)
    [claimed] = await store.claim_due(database, 10, lease_seconds=60.0)  # the runner that died
    assert claimed.attempts == 1

    clock.advance(59)
    assert await runner.run_once() == 0
    assert (await delivery(database, "k:lease")).status == "sending"
    clock.advance(1)
    assert await runner.run_once() == 1

    row = await delivery(database, "k:lease")
    assert (row.status, row.attempts) == ("delivered", 2)
    assert smtp.handler.keys() == ["k:lease"]
    # The dead runner's late failure would not undo the newer claim's outcome (D4).
    assert not await store.mark_failed(database, claimed, "late", retry_at=clock.now())
    assert (await delivery(database, "k:lease")).status == "delivered"


async def test_a_delivery_whose_every_try_left_no_outcome_is_given_up(
    database, clock, smtp, make_runner
):
    await _enqueue(database, "email", "k:crashes", EMAIL, LETTER)
    runner = make_runner(max_attempts=2, lease_seconds=60.0)
    for _ in range(2):  # two runners died mid-send
        assert len(await store.claim_due(database, 10, lease_seconds=60.0)) == 1
        clock.advance(60)

    assert await runner.run_once() == 1
    row = await delivery(database, "k:crashes")
    assert (row.status, row.attempts) == ("dead", 3)
    assert row.last_error == "gave up: no outcome recorded for the last try"
    assert smtp.handler.data_attempts == 0


async def test_serve_and_worker_run_a_delivery_runner_with_the_configured_channels(
    database, settings: Settings
):
    configured = settings.model_copy(update={"smtp_host": "mail.example.ru", "smtp_from": SENDER})
    roles = ["serve"] if database.is_sqlite else ["serve", "worker"]
    for role in roles:
        runner = compose(role, database, configured).get("deliveries")
        assert isinstance(runner, DeliveryRunner)
        assert set(runner.channels) == {"email"}
    if not database.is_sqlite:
        assert compose("api", database, configured).get("deliveries") is None
        assert compose("timers", database, configured).get("deliveries") is None

    too_short = configured.model_copy(update={"delivery_lease_seconds": 10.0})
    with pytest.raises(ValueError, match="must exceed the longest channel timeout"):
        compose("serve", database, too_short)
