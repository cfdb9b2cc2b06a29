"""Rate limits shared through the real Redis: two limiter instances with connections of their own
(two processes' view) see one count; time comes from the ManualClock; an outage falls back to the
process's own count instead of failing open or closed."""

from __future__ import annotations

import asyncio

import pytest

from allot.kernel.ratelimit import Rate
from allot.kernel.ratelimit_redis import RedisRateLimiter, RedisRequestLimiter
from allot.kernel.redis import connect

BOUND = 5.0


@pytest.fixture
def two_clients(redis_url, redis):  # `redis` cleans the namespace's keys afterwards
    return connect(redis_url, 2.0), connect(redis_url, 2.0)


async def test_two_processes_share_the_sign_in_count(two_clients, service_namespace, clock):
    one, two = (RedisRateLimiter(c, service_namespace) for c in two_clients)
    await one.hit("login:ip:10.0.0.1", window_seconds=60)  # t=0
    clock.advance(10)
    await two.hit("login:ip:10.0.0.1", window_seconds=60)  # t=10
    clock.advance(10)  # t=20
    assert await one.retry_after("login:ip:10.0.0.1", limit=3, window_seconds=60) is None
    await one.hit("login:ip:10.0.0.1", window_seconds=60)  # t=20: three in the window
    # Blocked, for both, until the attempt at t=0 leaves the window at t=60.
    assert await two.retry_after("login:ip:10.0.0.1", limit=3, window_seconds=60) == 40
    assert await one.retry_after("login:ip:10.0.0.1", limit=2, window_seconds=60) == 50
    clock.advance(40)  # t=60
    assert await two.retry_after("login:ip:10.0.0.1", limit=3, window_seconds=60) is None
    assert await two.retry_after("login:ip:10.0.0.1", limit=2, window_seconds=60) == 10
    await two.reset("login:ip:10.0.0.1")
    assert await one.retry_after("login:ip:10.0.0.1", limit=1, window_seconds=60) is None
    assert await one.retry_after("login:ip:10.0.0.2", limit=1, window_seconds=60) is None


async def test_a_sign_in_key_expires_with_its_window(two_clients, redis, service_namespace, clock):
    limiter = RedisRateLimiter(two_clients[0], service_namespace)
    await limiter.hit("login:email:a@example.com", window_seconds=300)
    ttl = await redis.pttl(limiter.key("login:email:a@example.com"))
    assert 299_000 < ttl <= 300_000


async def test_two_processes_share_one_api_budget(two_clients, service_namespace, clock):
    one, two = (RedisRequestLimiter(c, service_namespace) for c in two_clients)
    rate = Rate(5, 60.0)  # a burst of 5, then one every 12 s
    answers = [await (one if n % 2 else two).acquire("u:anna", rate) for n in range(5)]
    assert answers == [None] * 5
    assert await one.acquire("u:anna", rate) == pytest.approx(12.0)
    clock.advance(5)
    assert await two.acquire("u:anna", rate) == pytest.approx(7.0)  # refusals are not counted
    clock.advance(7)
    assert await two.acquire("u:anna", rate) is None
    assert await one.acquire("u:anna", rate) == pytest.approx(12.0)
    assert await one.acquire("u:boris", rate) is None


async def test_concurrent_requests_through_two_processes_never_exceed_the_burst(
    two_clients, service_namespace, clock
):
    one, two = (RedisRequestLimiter(c, service_namespace) for c in two_clients)
    rate = Rate(30, 60.0)
    answers = await asyncio.gather(
        *(limiter.acquire("u:busy", rate) for _ in range(40) for limiter in (one, two))
    )
    assert sum(answer is None for answer in answers) == 30  # 80 racing requests, 30 let through


async def test_an_api_key_lives_only_while_it_holds_something(
    two_clients, redis, service_namespace, clock
):
    limiter = RedisRequestLimiter(two_clients[0], service_namespace)
    await limiter.acquire("u:anna", Rate(10, 60.0))  # its time is 6 s ahead
    ttl = await redis.pttl(f"{service_namespace}:rate:u:anna")
    assert 5_000 < ttl <= 6_001  # Redis counts real time: a few ms passed since


async def test_redis_down_falls_back_to_the_process_count_and_back(
    proxy, redis_url, service_namespace, clock
):
    through_proxy = connect(proxy.url_through(redis_url), 0.5)
    login = RedisRateLimiter(through_proxy, service_namespace)
    api = RedisRequestLimiter(through_proxy, service_namespace)
    await login.hit("login:ip:1", window_seconds=60)  # recorded in Redis
    proxy.cut()
    # Login: the process's own count takes over at once (no exception reaches the sign-in).
    async with asyncio.timeout(BOUND):
        assert await login.retry_after("login:ip:1", limit=1, window_seconds=60) is None
        await login.hit("login:ip:1", window_seconds=60)
        assert await login.retry_after("login:ip:1", limit=1, window_seconds=60) == 60
        # API: still limited, per process.
        rate = Rate(2, 60.0)
        assert [await api.acquire("u:x", rate) for _ in range(3)][:2] == [None, None]
        assert await api.acquire("u:x", rate) == pytest.approx(30.0)
    assert login.breaker.failures == 1  # the breaker skipped Redis after the first failure
    proxy.restore()
    login.breaker.reset()
    api.breaker.reset()
    # Back on Redis: the count there (one hit before the outage) is the shared truth again.
    assert await login.retry_after("login:ip:1", limit=1, window_seconds=60) == 60
    assert await login.retry_after("login:ip:1", limit=2, window_seconds=60) is None
    assert await api.acquire("u:x", Rate(2, 60.0)) is None
    await through_proxy.aclose()
