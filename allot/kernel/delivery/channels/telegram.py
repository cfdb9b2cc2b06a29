"""Telegram through the Bot API's `sendMessage` (httpx).

The bot token is part of every request's URL (`/bot<token>/sendMessage`): it must never reach a
log line or `last_error`. So no error message here is built from an httpx exception's text
(which can quote the URL), exceptions are re-raised `from None` (no chained traceback), and a
filter on the `httpx` logger, which logs each request's URL at INFO, masks any bot token.

The Bot API has no idempotency key: a message is at least once, with the window
docs/deliveries.md describes (the sender dying between Telegram's answer and our mark).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx

from allot.kernel.config import Settings
from allot.kernel.delivery.channels import (
    OutgoingDelivery,
    PermanentFailure,
    TemporaryFailure,
)

# What Telegram tokens look like (`123456789:AA...`), in a URL path.
_TOKEN_IN_URL = re.compile(r"/bot[^/\s]+")
_OPTIONAL_FIELDS = ("parse_mode", "disable_notification", "disable_web_page_preview")


def redact(text: str) -> str:
    return _TOKEN_IN_URL.sub("/bot***", text)


class _RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_FILTER = _RedactTokens()


def install_log_filter() -> None:
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


class TelegramChannel:
    name = "telegram"

    def __init__(self, *, token: str, api_url: str, timeout_seconds: float = 30.0) -> None:
        if not token:
            raise ValueError("the Telegram channel needs a bot token")
        self._url = f"{api_url.rstrip('/')}/bot{token}/sendMessage"
        self._token = token
        self.timeout_seconds = timeout_seconds
        self._client: httpx.AsyncClient | None = None
        install_log_filter()

    @classmethod
    def from_settings(cls, settings: Settings) -> TelegramChannel:
        return cls(
            token=settings.telegram_bot_token.get_secret_value(),
            api_url=settings.telegram_api_url,
            timeout_seconds=settings.telegram_timeout_seconds,
        )

    def __repr__(self) -> str:  # never the URL
        return "<TelegramChannel>"

    def _safe(self, text: str) -> str:
        return redact(text).replace(self._token, "***")

    async def send(self, delivery: OutgoingDelivery) -> str:
        body: dict[str, Any] = {"chat_id": delivery.recipient, "text": delivery.payload["text"]}
        body.update({f: delivery.payload[f] for f in _OPTIONAL_FIELDS if f in delivery.payload})
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_seconds)
        try:
            response = await self._client.post(self._url, json=body)
        except Exception as exc:  # httpx.HTTPError, and InvalidURL & co. outside that tree
            # A timeout after the request went out may hide a sent message: the retry is the
            # documented duplicate. The exception's text can hold the URL: only its type goes.
            raise TemporaryFailure(f"no answer from Telegram ({type(exc).__name__})") from None
        return self._outcome(response)

    def _outcome(self, response: httpx.Response) -> str:
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise TemporaryFailure(f"Telegram answered {response.status_code} without JSON")
        if answer.get("ok") is True:
            message_id = (answer.get("result") or {}).get("message_id")
            if message_id is None:
                raise TemporaryFailure("Telegram answered ok without a message_id")
            return str(message_id)
        error_code = answer.get("error_code")
        code = error_code if isinstance(error_code, int) else response.status_code
        description = self._safe(str(answer.get("description") or ""))[:500]
        parameters = answer.get("parameters") or {}
        text = f"Telegram {code}: {description}"
        if code == 429:
            retry_after = parameters.get("retry_after")
            wait = float(retry_after) if isinstance(retry_after, int | float) else None
            raise TemporaryFailure(text, retry_after=wait)
        if code >= 500 or code == 401:
            # Telegram's trouble, or a revoked token: fixing the configuration lets it go.
            raise TemporaryFailure(text)
        if "migrate_to_chat_id" in parameters:  # a group became a supergroup: new chat id
            text += f" (the chat is now {parameters['migrate_to_chat_id']})"
        # 400 chat not found / message too long, 403 blocked by the user: never deliverable.
        raise PermanentFailure(text)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
