"""Local servers that speak the channels' protocols, started by the tests: a real SMTP server
(aiosmtpd) and an HTTP server implementing the Bot API's `sendMessage` subset.

Both run in threads of their own, so a handler that holds a message (the at-least-once tests)
never blocks the test's event loop, and a child process can talk to them as well.
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from tests.local_servers import free_port

BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"  # made up, shaped like a real one


@dataclass
class SmtpHandler:
    """Collects every message it accepts. `data_replies`: answers to the next DATA commands
    (e.g. "451 4.3.0 Try again later") before the default 250; `refuse`: recipients answered
    550 at RCPT; `hold_from`: messages from this count on are recorded and then held before the
    250 until `release` is set (the sender may be killed meanwhile)."""

    messages: list[Message] = field(default_factory=list)
    data_attempts: int = 0
    data_replies: deque[str] = field(default_factory=deque)
    refuse: set[str] = field(default_factory=set)
    hold_from: int | None = None
    held: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 <" + address + ">: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import asyncio

        with self.lock:
            self.data_attempts += 1
            if self.data_replies:
                return self.data_replies.popleft()
            content = envelope.original_content or envelope.content
            message = email.message_from_bytes(content, policy=email.policy.default)
            self.messages.append(message)
            hold = self.hold_from is not None and len(self.messages) >= self.hold_from
            if hold:
                self.held += 1
        while hold and not self.release.is_set():
            await asyncio.sleep(0.01)  # polls the test's signal; it synchronises nothing
        return "250 2.0.0 Ok: queued"

    def keys(self) -> list[str]:
        with self.lock:
            # A long key is folded onto a continuation line; unfolded, it reads as sent.
            return [str(m["X-Allot-Delivery-Key"]).strip() for m in self.messages]

    def count(self) -> int:
        with self.lock:
            return len(self.messages)


class SmtpServer:
    def __init__(self) -> None:
        self.handler = SmtpHandler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.handler.release.set()
        self.controller.stop()


@dataclass
class TelegramState:
    """What the fake Bot API saw and will answer. `replies`: (status, body) for the next calls
    before the default `{"ok": true, ...}`; every call is recorded with its path and body."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    replies: deque[tuple[int, dict[str, Any]]] = field(default_factory=deque)
    sent: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def too_many_requests(retry_after: int) -> tuple[int, dict[str, Any]]:
    return 429, {
        "ok": False,
        "error_code": 429,
        "description": f"Too Many Requests: retry after {retry_after}",
        "parameters": {"retry_after": retry_after},
    }


CHAT_NOT_FOUND = (
    400,
    {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"},
)


class TelegramServer:
    """`POST /bot<token>/sendMessage` with a JSON body, as api.telegram.org answers it."""

    def __init__(self, token: str = BOT_TOKEN) -> None:
        self.state = TelegramState()
        self.token = token
        state, expected = self.state, f"/bot{token}/sendMessage"

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep the test output quiet
                return

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"] or 0)))
                with state.lock:
                    state.calls.append({"path": self.path, "body": body, "at": time.time()})
                    if self.path != expected:
                        status, answer = 401, {
                            "ok": False, "error_code": 401, "description": "Unauthorized"
                        }  # fmt: skip
                    elif state.replies:
                        status, answer = state.replies.popleft()
                    else:
                        state.sent.append(body)
                        status = 200
                        answer = {
                            "ok": True,
                            "result": {"message_id": 1000 + len(state.sent), "text": body["text"]},
                        }
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> TelegramServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
