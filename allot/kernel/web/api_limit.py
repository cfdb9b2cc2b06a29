"""The API rate limit: each caller of `/api/v1/*` gets `api_rate_limit` requests (per user, whether
a bearer token or a session signs the call) or `api_anonymous_rate_limit` (per client IP, for
calls without valid credentials: token guessing, probes). Over it, the answer is 429
problem+json (`urn:allot:problem:rate-limited`) with `Retry-After`, given before routing: the
endpoint never runs, so a refused request writes nothing.

It sits on every API request, so it is one pure ASGI layer with no `send` wrapper, placed just
inside `ShellMiddleware` (which has resolved the principal by then), and it reads the principal
straight from `scope["state"]`. In-memory it costs about a microsecond; with Redis one round
trip (`kernel/ratelimit_redis`). Figures in docs/redis.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from allot.kernel.errors import RateLimited
from allot.kernel.ratelimit import Rate, RequestLimiter, retry_after_header
from allot.kernel.ratelimit_redis import request_limiter
from allot.kernel.web.middleware import send_problem

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from allot.kernel.config import Settings

API_PREFIX = "/api/v1/"


class ApiRateLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        limiter: RequestLimiter,
        user_rate: Rate | None,
        anonymous_rate: Rate | None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.user_rate = user_rate
        self.anonymous_rate = anonymous_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        state = scope.get("state")
        principal = state.get("principal") if state else None
        if principal is not None:
            rate, key = self.user_rate, "u:" + principal.user_id.hex
        else:
            client = scope.get("client")
            rate, key = self.anonymous_rate, "ip:" + (client[0] if client else "-")
        if rate is not None:
            wait = await self.limiter.acquire(key, rate)
            if wait is not None:
                await _refuse(scope, send, retry_after_header(wait), rate)
                return
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, send: Send, retry_after: int, rate: Rate) -> None:
    limit = f"{rate.limit} requests per {rate.window_seconds:g} s"
    problem = RateLimited(
        detail=f"API rate limit exceeded ({limit}); retry after {retry_after} s",
        extra={"retry_after": retry_after},
    ).to_problem(instance=scope["path"])
    await send_problem(send, problem, 429, ((b"retry-after", str(retry_after).encode()),))


def api_rate_limit(settings: Settings, redis: Redis | None) -> Middleware:
    """The middleware entry for the configured limits (Redis-backed when `redis` is given).
    A malformed setting fails here, when the app is built, not on the first request."""
    return Middleware(
        ApiRateLimitMiddleware,
        limiter=request_limiter(settings, redis),
        user_rate=Rate.parse(settings.api_rate_limit),
        anonymous_rate=Rate.parse(settings.api_anonymous_rate_limit),
    )
