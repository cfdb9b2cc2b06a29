"""Per-request cost of the API rate limit: the limiter alone, and its middleware in front of a
no-op ASGI app, in memory and with the real Redis (ALLOT_TEST_REDIS_URL or 127.0.0.1:6379).
Figures in docs/redis.md. Usage: python -m bench.api_limit_cost"""

import asyncio
import os
import time
import uuid

from allot.kernel.auth import Principal
from allot.kernel.ratelimit import InMemoryRequestLimiter, Rate
from allot.kernel.ratelimit_redis import RedisRequestLimiter
from allot.kernel.redis import connect
from allot.kernel.web.api_limit import ApiRateLimitMiddleware


async def noop(scope, receive, send):
    return None


async def bench(name, fn, n):
    for _ in range(min(n, 2000)):
        await fn()
    t = time.perf_counter()
    for _ in range(n):
        await fn()
    dt = (time.perf_counter() - t) / n
    print(f"{name:55s} {dt * 1e6:8.2f} µs")
    return dt


async def main():
    rate = Rate(10**9, 60.0)
    mem = InMemoryRequestLimiter()
    ns = "bench-" + uuid.uuid4().hex[:8]
    r = connect(os.environ.get("ALLOT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"), 0.25)
    red = RedisRequestLimiter(r, ns)
    p = Principal(user_id=uuid.uuid4(), label="x", roles=frozenset(), permissions=frozenset())
    scope = {
        "type": "http",
        "path": "/api/v1/customers",
        "state": {"principal": p},
        "client": ("1.2.3.4", 1),
    }
    page = {"type": "http", "path": "/board", "state": {}, "client": ("1.2.3.4", 1)}
    bare = noop
    mw_mem = ApiRateLimitMiddleware(noop, mem, rate, rate)
    mw_red = ApiRateLimitMiddleware(noop, red, rate, rate)
    mw_off = ApiRateLimitMiddleware(noop, mem, None, None)
    await bench("no-op app alone", lambda: bare(scope, None, None), 200_000)
    await bench("middleware, page path (not /api/v1)", lambda: mw_mem(page, None, None), 200_000)
    await bench("middleware, limit off", lambda: mw_off(scope, None, None), 200_000)
    await bench("in-memory limiter.acquire", lambda: mem.acquire("u:x", rate), 200_000)
    await bench("middleware + in-memory limiter", lambda: mw_mem(scope, None, None), 200_000)
    await bench("redis limiter.acquire (1 EVALSHA)", lambda: red.acquire("u:x", rate), 5_000)
    await bench("middleware + redis limiter", lambda: mw_red(scope, None, None), 5_000)
    # concurrency: 32 concurrent callers through one client (pool)
    n = 20_000
    t = time.perf_counter()

    async def worker(k):
        for _ in range(n // 32):
            await red.acquire(f"u:{k}", rate)

    await asyncio.gather(*(worker(k) for k in range(32)))
    dt = time.perf_counter() - t
    print(f"{'redis limiter, 32 concurrent callers: throughput':55s} {n / dt:8.0f} /s")
    async for key in r.scan_iter(match=f"{ns}:*"):
        await r.delete(key)
    await r.aclose()


asyncio.run(main())
