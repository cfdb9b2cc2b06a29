"""The in-memory sliding-window limiter, driven by the ManualClock."""

from __future__ import annotations

from allot.kernel.ratelimit import InMemoryRateLimiter, RateLimiter


async def hits(limiter, key, count, clock, every=0.0):
    for _ in range(count):
        await limiter.hit(key, window_seconds=60)
        clock.advance(every)


def test_the_in_memory_limiter_satisfies_the_protocol():
    limiter: RateLimiter = InMemoryRateLimiter()
    assert limiter is not None


async def test_blocks_at_the_limit_and_says_when_to_retry(clock):
    limiter = InMemoryRateLimiter()
    await hits(limiter, "k", 2, clock, every=10)  # at t=0 and t=10, now t=20
    assert await limiter.retry_after("k", limit=3, window_seconds=60) is None
    await limiter.hit("k", window_seconds=60)  # t=20
    # Three in the window: blocked until the one at t=0 leaves it at t=60.
    assert await limiter.retry_after("k", limit=3, window_seconds=60) == 40


async def test_the_window_slides(clock):
    limiter = InMemoryRateLimiter()
    await hits(limiter, "k", 3, clock, every=10)  # t=0, 10, 20; now t=30
    assert await limiter.retry_after("k", limit=3, window_seconds=60) == 30
    clock.advance(29)
    assert await limiter.retry_after("k", limit=3, window_seconds=60) == 1
    clock.advance(1)  # t=60: the first hit is out, two remain
    assert await limiter.retry_after("k", limit=3, window_seconds=60) is None
    assert await limiter.retry_after("k", limit=2, window_seconds=60) == 10


async def test_retry_after_never_rounds_down_to_zero(clock):
    limiter = InMemoryRateLimiter()
    await limiter.hit("k", window_seconds=60)
    clock.advance(59.5)
    assert await limiter.retry_after("k", limit=1, window_seconds=60) == 1


async def test_keys_are_independent_and_reset_forgets(clock):
    limiter = InMemoryRateLimiter()
    await hits(limiter, "a", 2, clock)
    assert await limiter.retry_after("a", limit=2, window_seconds=60) is not None
    assert await limiter.retry_after("b", limit=2, window_seconds=60) is None
    await limiter.reset("a")
    assert await limiter.retry_after("a", limit=2, window_seconds=60) is None


async def test_stale_keys_are_swept_so_memory_stays_bounded(clock):
    limiter = InMemoryRateLimiter()
    for n in range(limiter.SWEEP_EVERY - 1):
        await limiter.hit(f"ip-{n}", window_seconds=60)
    assert limiter.tracked_keys() == limiter.SWEEP_EVERY - 1
    clock.advance(61)
    await limiter.hit("fresh", window_seconds=60)  # the hit that triggers the sweep
    assert limiter.tracked_keys() == 1


# -- the request-rate limiter (API) and its middleware ------------------------------------------
import uuid  # noqa: E402

import httpx  # noqa: E402
import pytest  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from allot.app import create_app  # noqa: E402
from allot.kernel.ratelimit import InMemoryRequestLimiter, Rate  # noqa: E402
from tests.factories import auth_headers, make_user  # noqa: E402


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6000/minute", Rate(6000, 60.0)),
        ("100/second", Rate(100, 1.0)),
        (" 50000/hours ", Rate(50000, 3600.0)),
        ("10/day", Rate(10, 86400.0)),
        ("", None),
        ("0", None),
        ("0/minute", None),
    ],
)
def test_rates_parse(text, expected):
    assert Rate.parse(text) == expected


@pytest.mark.parametrize("text", ["many", "10/fortnight", "-1/minute", "1.5/second"])
def test_malformed_rates_are_refused(text):
    with pytest.raises(ValueError, match="Not a rate"):
        Rate.parse(text)


async def test_a_burst_of_the_limit_then_one_request_per_interval(clock):
    limiter, rate = InMemoryRequestLimiter(), Rate(6, 60.0)  # interval: 10 s
    assert [await limiter.acquire("k", rate) for _ in range(6)] == [None] * 6
    assert await limiter.acquire("k", rate) == pytest.approx(10.0)
    clock.advance(4)
    assert await limiter.acquire("k", rate) == pytest.approx(6.0)  # refusals are not counted
    clock.advance(6)
    assert await limiter.acquire("k", rate) is None
    assert await limiter.acquire("k", rate) == pytest.approx(10.0)
    clock.advance(60)  # a full window of rest gives the whole burst back
    assert [await limiter.acquire("k", rate) for _ in range(6)] == [None] * 6
    assert await limiter.acquire("other", rate) is None


async def test_the_request_limiter_forgets_keys_at_rest(clock):
    limiter, rate = InMemoryRequestLimiter(), Rate(10, 1.0)
    for n in range(limiter.SWEEP_EVERY - 1):
        await limiter.acquire(f"ip-{n}", rate)
    assert limiter.tracked_keys() == limiter.SWEEP_EVERY - 1
    clock.advance(1)
    await limiter.acquire("fresh", rate)  # the acquisition that triggers the sweep
    assert limiter.tracked_keys() == 1


def _limited_app(settings, database, **limits):
    app = create_app(settings.model_copy(update=limits), database, run_background=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def _customers(database) -> int:
    from allot.contexts.customers.models import Customer

    async with database.reader() as session:
        return int(await session.scalar(select(func.count()).select_from(Customer)))


async def test_the_api_limit_refuses_with_429_and_retry_after_and_writes_nothing(
    settings, database, clock
):
    user = await make_user(database, roles=["admin"], password=None)
    other = await make_user(database, roles=["admin"], password=None)
    headers, other_headers = await auth_headers(database, user), await auth_headers(database, other)
    async with _limited_app(settings, database, api_rate_limit="3/minute") as client:
        for n in range(3):
            created = await client.post(
                "/api/v1/customers", json={"name": f"Card {n}"}, headers=headers
            )
            assert created.status_code == 201, created.text
        refused = await client.post(
            "/api/v1/customers", json={"name": "One too many"}, headers=headers
        )
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["retry-after"] == "20"  # 3 per 60 s: one more every 20 s
        assert refused.headers["x-request-id"]
        problem = refused.json()
        assert (problem["type"], problem["retry_after"]) == ("urn:allot:problem:rate-limited", 20)
        assert await _customers(database) == 3  # the refused request never reached the endpoint
        # The limit is per user: another token of someone else is not affected ...
        assert (await client.get("/api/v1/customers", headers=other_headers)).status_code == 200
        # ... pages are not API calls, and the budget comes back with time.
        assert (await client.get("/healthz")).status_code == 200
        clock.advance(20)
        assert (await client.get("/api/v1/customers", headers=headers)).status_code == 200
        assert (await client.get("/api/v1/customers", headers=headers)).status_code == 429


async def test_anonymous_calls_are_limited_per_ip(settings, database, clock):
    async with _limited_app(
        settings, database, api_rate_limit="", api_anonymous_rate_limit="2/second"
    ) as client:
        bad_token = {"Authorization": f"Bearer {uuid.uuid4().hex}"}
        statuses = [(await client.get("/api/v1/customers", headers=bad_token)).status_code
                    for _ in range(3)]  # fmt: skip
        assert statuses == [401, 401, 429]
        clock.advance(0.5)  # one request per 0.5 s
        assert (await client.get("/api/v1/customers")).status_code == 401


async def test_an_empty_limit_switches_the_api_limit_off(settings, database, clock):
    user = await make_user(database, roles=["admin"], password=None)
    headers = await auth_headers(database, user)
    async with _limited_app(settings, database, api_rate_limit="0") as client:
        statuses = {(await client.get("/api/v1/customers", headers=headers)).status_code
                    for _ in range(50)}  # fmt: skip
        assert statuses == {200}


def test_a_malformed_limit_fails_when_the_app_is_built(settings, database):
    with pytest.raises(ValueError, match="Not a rate"):
        create_app(settings.model_copy(update={"api_rate_limit": "lots"}), database)
