"""Channels: how a delivery leaves Allot. One small interface, one module per channel.

A channel's `send` returns the provider's reference for the message, or raises
- `TemporaryFailure`: try again later (connection refused, SMTP 4xx, Telegram 429 or 5xx, and
  configuration problems such as a refused login, which an operator can fix without the
  message changing);
- `PermanentFailure`: this message can never be delivered as it is (SMTP 5xx for the recipient
  or the content, Telegram 400 "chat not found", 403 "bot was blocked"): dead at once.
Their messages go into the log and `last_error`: a channel builds them from the provider's
answer, never from anything holding a secret (a Telegram URL carries the bot token).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from allot.kernel.config import Settings


class DeliveryFailure(Exception):
    """A try that did not deliver; the message says why (no secrets, no personal data)."""


class TemporaryFailure(DeliveryFailure):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        # The provider said when to come back (Telegram 429 `retry_after`): honoured exactly.
        self.retry_after = retry_after


class PermanentFailure(DeliveryFailure):
    pass


class ChannelNotConfigured(PermanentFailure):
    pass


@dataclass(frozen=True, slots=True)
class OutgoingDelivery:
    """What a channel gets to send: a claimed row of the delivery log."""

    id: uuid.UUID
    key: str
    channel: str
    recipient: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime


class Channel(Protocol):
    name: str
    # Longest a send may take; the runner's lease must be longer (else a slow send is re-sent).
    timeout_seconds: float

    async def send(self, delivery: OutgoingDelivery) -> str: ...

    async def close(self) -> None: ...


# What each channel needs in the payload, checked when a delivery is enqueued: a consumer that
# forgets a field fails in its own unit of work, not minutes later in the runner.
PAYLOAD_FIELDS: dict[str, tuple[str, ...]] = {
    "email": ("subject", "text"),
    "telegram": ("text",),
}
CHANNEL_NAMES = tuple(PAYLOAD_FIELDS)


def check_payload(channel: str, recipient: str, payload: Mapping[str, Any]) -> None:
    if channel not in PAYLOAD_FIELDS:
        raise ValueError(f"unknown delivery channel {channel!r}; known: {', '.join(CHANNEL_NAMES)}")
    if not recipient:
        raise ValueError("a delivery needs a recipient")
    missing = [f for f in PAYLOAD_FIELDS[channel] if not isinstance(payload.get(f), str)]
    if missing:
        raise ValueError(f"a {channel} delivery needs text fields {', '.join(missing)}")


def channels_from_settings(settings: Settings) -> dict[str, Channel]:
    """The channels this configuration enables (email with ALLOT_SMTP_HOST, Telegram with
    ALLOT_TELEGRAM_BOT_TOKEN). A notifications context may ask it before choosing a channel."""
    from allot.kernel.delivery.channels.email import EmailChannel
    from allot.kernel.delivery.channels.telegram import TelegramChannel

    channels: dict[str, Channel] = {}
    if settings.smtp_host:
        channels["email"] = EmailChannel.from_settings(settings)
    if settings.telegram_bot_token.get_secret_value():
        channels["telegram"] = TelegramChannel.from_settings(settings)
    return channels


NOT_CONFIGURED_HINT = {"email": "ALLOT_SMTP_HOST", "telegram": "ALLOT_TELEGRAM_BOT_TOKEN"}
