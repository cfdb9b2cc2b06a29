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
