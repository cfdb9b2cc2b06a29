"""ASGI middleware: the request's outer layer (request id, body size limit, access log, metrics).

One pure ASGI layer does all four, with one wrapper around `send`: each layer of middleware costs
a coroutine call and a `send` wrapper per message on every request (≈3–10 µs each), and these
four always run together. The layer inside it is `kernel.web.shell.ShellMiddleware` (who is
calling, language, CSRF, flash messages).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from allot.kernel.context import correlation_id_var, request_id_var
from allot.kernel.errors import PayloadTooLarge
from allot.kernel.logging import get_logger

log = get_logger("allot.http")

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

HTTP_REQUESTS = Counter(
    "allot_http_requests_total", "HTTP requests by route and status", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "allot_http_request_duration_seconds",
    "HTTP request latency by route",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# Labelled children of the two metrics, looked up once per (method, route[, status]): the
# same objects `labels()` returns, without its lock and argument checks on every request. The
# keys are bounded by the routes the app has (unmatched paths share "unmatched").
_request_counters: dict[tuple[str, str, int], Any] = {}
_latency_histograms: dict[tuple[str, str], Any] = {}

# Paths (exact) whose POST bodies are files: they get `max_upload_bytes` instead of the
# ordinary limit. A context registers its upload endpoints in `install(app)`.
_upload_paths: set[str] = set()


def allow_upload(path: str) -> None:
    _upload_paths.add(path)


class RequestContextMiddleware:
    """- Accepts or generates `X-Request-Id`, returns it, binds it into logs and outbox events;
    - refuses bodies over the limit with 413, whether Content-Length says so or the stream does
      (the 413 carries the request id like every other answer);
    - renders an unexpected error as the 500 problem inside the request's context;
    - counts and times every request (`/metrics`) and logs it."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_upload_bytes: int | None = None) -> None:
        self.app = app
        self.ordinary_max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes or max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = declared = None
        for key, value in scope.get("headers", ()):
            name = key.lower()
            if name == b"x-request-id":
                if incoming is None:
                    incoming = value.decode("latin-1")
            elif name == b"content-length" and declared is None:
                declared = value.decode("latin-1")
        request_id = (
            incoming if incoming and _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        )
        request_token = request_id_var.set(request_id)
        correlation_token = correlation_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        started_response = False
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                started_response = True
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), id_header]}
            await send(message)

        upload = scope["method"] == "POST" and scope["path"] in _upload_paths
        max_bytes = self.max_upload_bytes if upload else self.ordinary_max_bytes
        received = 0
        exceeded = replaced = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    exceeded = True
                    raise PayloadTooLarge(detail=f"The body exceeds {max_bytes} bytes")
            return message

        async def guarded_send(message: Message) -> None:
            # Frameworks turn an error while reading the body into their own 400; whatever the
            # app answers after the limit was crossed is replaced by the 413 the client deserves.
            nonlocal replaced
            if not exceeded:
                await send_with_id(message)
            elif not replaced:
                replaced = True
                await _send_problem(send_with_id, max_bytes)

        try:
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                await _send_problem(send_with_id, max_bytes)
            else:
                await self.app(scope, limited_receive, guarded_send)
        except Exception as exc:
            # Render the 500 here, inside the request's context, so it carries the request id
            # (header and page) like every other response; Starlette's outermost handler would
            # run after the context is gone.
            if started_response:
                raise
            from starlette.requests import Request

            from allot.kernel.web.problems import handle_unexpected

            response = await handle_unexpected(Request(scope, receive), exc)
            await response(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            _count(method, route_path, status, elapsed)
            if not route_path.startswith("/static"):
                log.info(
                    "request",
                    method=method,
                    route=route_path,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
            request_id_var.reset(request_token)
            correlation_id_var.reset(correlation_token)


def _count(method: str, route_path: str, status: int, elapsed: float) -> None:
    counter = _request_counters.get((method, route_path, status))
    if counter is None:
        counter = HTTP_REQUESTS.labels(method, route_path, str(status))
        _request_counters[(method, route_path, status)] = counter
    counter.inc()
    histogram = _latency_histograms.get((method, route_path))
    if histogram is None:
        histogram = HTTP_LATENCY.labels(method, route_path)
        _latency_histograms[(method, route_path)] = histogram
    histogram.observe(elapsed)


async def _send_problem(send: Send, max_bytes: int) -> None:
    problem = PayloadTooLarge(detail=f"The body exceeds {max_bytes} bytes").to_problem()
    await send_problem(send, problem, 413)


async def send_problem(
    send: Send, problem: dict[str, Any], status: int, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """Answer with a problem+json straight from an ASGI layer (before any route runs)."""
    body = json.dumps(problem).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
