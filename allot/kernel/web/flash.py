"""Flash messages ("User created") that survive the redirect after a form post.

They travel in a signed cookie rather than the session row, so anonymous pages (signed out,
session expired) can flash too and showing a message costs no database write. A message is
removed once a page has actually shown it: a template only consumes them by iterating
`flashes`, so an htmx fragment that does not draw the message area leaves them for later.

Kernel plumbing, so any context's view can `flash(request, _("Saved."))`; the shell middleware
(`kernel/web/shell.py`, installed by identity) reads and writes the cookie, and identity hands
templates the `flashes` reader (identity/shell.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

FLASH_COOKIE = "allot_flash"
MAX_MESSAGES = 5
MAX_TEXT_LENGTH = 300
LEVELS = ("info", "success", "warning", "error")
_ATTRIBUTES = "Path=/; HttpOnly; SameSite=Lax"


@dataclass(frozen=True, slots=True)
class Flash:
    level: str
    text: str


def flash(request: Request, text: str, level: str = "success") -> None:
    """Show `text` on the next page this browser renders (this one, if it renders one)."""
    pending: list[Flash] = request.state.flash_out if hasattr(request.state, "flash_out") else []
    message = Flash(level if level in LEVELS else "info", text[:MAX_TEXT_LENGTH])
    if message not in pending:  # an endpoint retried after a deadlock flashes only once
        pending.append(message)
    request.state.flash_out = pending[-MAX_MESSAGES:]


class FlashReader:
    """What templates iterate; iterating marks the messages shown."""

    def __init__(self, request: Request) -> None:
        self._state = request.state

    def __iter__(self) -> Iterator[Flash]:
        incoming: list[Flash] = getattr(self._state, "flash_in", [])
        outgoing: list[Flash] = getattr(self._state, "flash_out", [])
        self._state.flash_in = []
        self._state.flash_out = []
        return iter([*incoming, *outgoing])


def _sign(secret: bytes, payload: str) -> str:
    mac = hmac.new(secret, b"allot-flash\x00" + payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def encode(secret: bytes, messages: list[Flash]) -> str:
    raw = json.dumps([[m.level, m.text] for m in messages], ensure_ascii=False).encode()
    payload = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return f"{payload}.{_sign(secret, payload)}"


def decode(secret: bytes, value: str | None) -> list[Flash]:
    if not value or "." not in value:
        return []
    payload, _, mac = value.rpartition(".")
    if not hmac.compare_digest(_sign(secret, payload), mac):
        return []
    try:
        data: Any = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return [Flash(str(level), str(text)) for level, text in data][:MAX_MESSAGES]
    except (ValueError, TypeError, binascii.Error):
        return []


def read_flashes(request: Request) -> tuple[bytes, str | None]:
    """Puts the messages of the incoming cookie on `request.state.flash_in`; returns the secret
    and the cookie as it came, for `outgoing_cookie`."""
    secret = str(request.app.state.secret_key).encode()
    cookie = request.cookies.get(FLASH_COOKIE)
    request.state.flash_in = decode(secret, cookie)
    return secret, cookie


def outgoing_cookie(state: Any, secret: bytes, cookie: str | None) -> str | None:
    """The Set-Cookie value the response needs: the messages not shown yet (when they differ
    from the incoming cookie), a deletion when all were shown, else None."""
    remaining = [*getattr(state, "flash_in", []), *getattr(state, "flash_out", [])]
    if remaining:
        value = encode(secret, remaining[-MAX_MESSAGES:])
        return f"{FLASH_COOKIE}={value}; {_ATTRIBUTES}" if value != cookie else None
    return f"{FLASH_COOKIE}=; Max-Age=0; {_ATTRIBUTES}" if cookie else None
