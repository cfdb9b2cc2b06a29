"""The delivery runner: takes due rows of the delivery log and sends them, at least once.

A round: claim a batch (one transaction: the rows become `sending`, leased), send each through
its channel OUTSIDE any transaction (SQLite has one writer; a network wait must not hold it),
then record each outcome in a short transaction of its own as soon as it is known:
- accepted -> `delivered` with the provider's reference; never sent again;
- `TemporaryFailure` -> `pending` again after backoff with jitter (or exactly the provider's
  `retry_after`), `dead` once `max_attempts` tries failed;
- `PermanentFailure` -> `dead` at once; `allot deliveries retry KEY` brings it back.

The at-least-once window: a runner that dies (or loses the database) after the provider
accepted a message and before its `delivered` mark committed leaves the row `sending`; when its
lease runs out the next round claims it and sends it AGAIN. That is the only way a message goes
out twice, and only the rows in flight at that moment can (at most `batch_size` per runner).
tests/faults/test_deliveries.py kills a runner there and counts the copies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from allot.kernel.clock import utcnow
from allot.kernel.config import Settings
from allot.kernel.db.engine import Database
from allot.kernel.delivery import store
from allot.kernel.delivery.channels import (
    NOT_CONFIGURED_HINT,
    Channel,
    OutgoingDelivery,
    PermanentFailure,
    TemporaryFailure,
    channels_from_settings,
)
from allot.kernel.events.dispatcher import backoff_seconds
from allot.kernel.logging import get_logger
from allot.kernel.loops import WakeableLoop

log = get_logger(__name__)

RETRY_CAP_SECONDS = 3600.0


class DeliveryRunner:
    def __init__(
        self,
        database: Database,
        channels: Mapping[str, Channel],
        *,
        batch_size: int = 20,
        max_attempts: int = 10,
        lease_seconds: float = 120.0,
        retry_base_seconds: float = 30.0,
        retry_cap_seconds: float = RETRY_CAP_SECONDS,
        idle_poll_seconds: float = 1.0,
    ) -> None:
        longest = max((channel.timeout_seconds for channel in channels.values()), default=0.0)
        if lease_seconds <= longest:
            # A send still running when its lease ends is claimed and sent again by another
            # runner: a duplicate that is nobody's fault but this setting's.
            raise ValueError(
                f"ALLOT_DELIVERY_LEASE_SECONDS ({lease_seconds}) must exceed the longest "
                f"channel timeout ({longest})"
            )
        self.database = database
        self.channels = dict(channels)
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.lease_seconds = lease_seconds
        self.retry_base_seconds = retry_base_seconds
        self.retry_cap_seconds = retry_cap_seconds
        self.sent = 0  # accepted by a provider since start (tests, logs)
        self._loop = WakeableLoop("allot-deliveries", self.run_once, idle_poll_seconds)

    @classmethod
    def from_settings(cls, database: Database, settings: Settings) -> DeliveryRunner:
        return cls(
            database,
            channels_from_settings(settings),
            batch_size=settings.delivery_batch_size,
            max_attempts=settings.delivery_max_attempts,
            lease_seconds=settings.delivery_lease_seconds,
            retry_base_seconds=settings.delivery_retry_base_seconds,
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        store.add_enqueue_listener(self._loop.wake)
        self._loop.start()

    async def stop(self) -> None:
        """Finishes the round in flight (its sends and their marks), then closes the channels."""
        store.remove_enqueue_listener(self._loop.wake)
        await self._loop.stop()
        for channel in self.channels.values():
            await channel.close()

    # -- work --------------------------------------------------------------------------------
    async def run_once(self) -> int:
        """Claim what is due now and send it; returns how many were claimed. Tests call this
        after moving the clock."""
        claimed = await store.claim_due(self.database, self.batch_size, self.lease_seconds)
        if claimed:
            await asyncio.gather(*(self._deliver(delivery) for delivery in claimed))
        return len(claimed)

    async def drain(self, max_rounds: int = 1000) -> int:
        """Rounds until nothing is due (tests, CLI); returns how many were claimed."""
        total = 0
        for _ in range(max_rounds):
            claimed = await self.run_once()
            if claimed == 0:
                return total
            total += claimed
        raise RuntimeError("the delivery log did not drain")

    async def _deliver(self, delivery: OutgoingDelivery) -> None:
        try:
            await self._send_and_record(delivery)
        except Exception:
            # The mark could not be written (the database went away): the row stays `sending`
            # and is sent again when its lease runs out (the documented window).
            log.exception("delivery outcome not recorded", delivery_id=str(delivery.id))

    async def _send_and_record(self, delivery: OutgoingDelivery) -> None:
        channel = self.channels.get(delivery.channel)
        if delivery.attempts > self.max_attempts:
            # Claimed again after its last try left no outcome (its sender died each time):
            # sending on could repeat a message forever, or crash the runner forever.
            await self._failed(delivery, "gave up: no outcome recorded for the last try", None)
            return
        if channel is None:
            hint = NOT_CONFIGURED_HINT.get(delivery.channel, "a channel of that name")
            error = f"channel {delivery.channel!r} is not configured in this process ({hint})"
            await self._failed(delivery, error, None)
            return
        try:
            provider_ref = await channel.send(delivery)
        except PermanentFailure as exc:
            await self._failed(delivery, str(exc), None)
            return
        except TemporaryFailure as exc:
            await self._failed(delivery, str(exc), self._retry_delay(delivery, exc.retry_after))
            return
        except Exception as exc:  # a bug in a channel: retried like a temporary failure
            log.exception("delivery channel failed", channel=delivery.channel)
            error = f"{type(exc).__name__}: {exc}"
            await self._failed(delivery, error, self._retry_delay(delivery, None))
            return
        self.sent += 1
        await store.mark_delivered(self.database, delivery.id, provider_ref)
        log.info(
            "delivery sent",
            delivery_id=str(delivery.id),
            channel=delivery.channel,
            attempts=delivery.attempts,
        )

    def _retry_delay(self, delivery: OutgoingDelivery, retry_after: float | None) -> float | None:
        """Seconds until the next try; None when the tries are used up."""
        if delivery.attempts >= self.max_attempts:
            return None
        if retry_after is not None:
            return max(retry_after, 0.0)
        return backoff_seconds(delivery.attempts, self.retry_base_seconds, self.retry_cap_seconds)

    async def _failed(self, delivery: OutgoingDelivery, error: str, delay: float | None) -> None:
        retry_at = None if delay is None else utcnow() + timedelta(seconds=delay)
        await store.mark_failed(self.database, delivery, error, retry_at=retry_at)
        fields: dict[str, Any] = {
            "delivery_id": str(delivery.id),
            "channel": delivery.channel,
            "attempts": delivery.attempts,
            "error": error,
        }
        if delay is None:
            log.warning("delivery dead", **fields)
        else:
            log.info("delivery failed; will retry", retry_in_seconds=round(delay, 1), **fields)
