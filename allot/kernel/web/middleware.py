"""ASGI middleware: request id + access log + metrics, and the request body size limit."""

from __future__ import annotations

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


class RequestContextMiddleware:
    """Accepts or generates `X-Request-Id`, returns it, binds it into logs and outbox events."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, REQUEST_ID_HEADER)
        request_id = (
            incoming if incoming and _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        )
        request_token = request_id_var.set(request_id)
        correlation_token = correlation_id_var.set(request_id)
        started = time.perf_counter()
        status_holder: dict[str, int] = {"status": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        started_response = False

        async def tracking_send(message: Message) -> None:
            nonlocal started_response
            if message["type"] == "http.response.start":
                started_response = True
            await send_with_id(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            # Render the 500 here, inside the request's context, so it carries the request id
            # (header and page) like every other response; Starlette's outermost handler would
            # run after the context is gone.
            if started_response:
                raise
            from starlette.requests import Request

            from allot.kernel.web.problems import handle_unexpected

            response = await handle_unexpected(Request(scope, receive), exc)
            await response(scope, receive, tracking_send)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            status = status_holder["status"]
            HTTP_REQUESTS.labels(method, route_path, str(status)).inc()
            HTTP_LATENCY.labels(method, route_path).observe(elapsed)
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


# Paths (exact) whose POST bodies are files: they get `max_upload_bytes` instead of the
# ordinary limit. A context registers its upload endpoints in `install(app)`.
_upload_paths: set[str] = set()


def allow_upload(path: str) -> None:
    _upload_paths.add(path)


class BodySizeLimitMiddleware:
    """Refuses bodies over the limit with 413, whether Content-Length says so or the stream does."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_upload_bytes: int | None = None) -> None:
        self.app = app
        self.ordinary_max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes or max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope.get("method") == "POST" and scope.get("path") in _upload_paths
        max_bytes = self.max_upload_bytes if upload else self.ordinary_max_bytes
        await self._limited(scope, receive, send, max_bytes)

    async def _limited(self, scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
        declared = _header(scope, "content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await _send_problem(send, max_bytes)
            return
        received = 0
        exceeded = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    exceeded = True
                    raise PayloadTooLarge(detail=f"The body exceeds {max_bytes} bytes")
            return message

        # Frameworks turn an error while reading the body into their own 400; whatever the app
        # answers after the limit was crossed is replaced by the 413 the client deserves.
        replaced = False

        async def guarded_send(message: Message) -> None:
            nonlocal replaced
            if not exceeded:
                await send(message)
            elif not replaced:
                replaced = True
                await _send_problem(send, max_bytes)

        await self.app(scope, limited_receive, guarded_send)


async def _send_problem(send: Send, max_bytes: int) -> None:
    import json

    problem = PayloadTooLarge(detail=f"The body exceeds {max_bytes} bytes").to_problem()
    body = json.dumps(problem).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: str) -> str | None:
    target = name.encode()
    headers: Any = scope.get("headers", [])
    for key, value in headers:
        if key.lower() == target:
            return str(value.decode("latin-1"))
    return None
