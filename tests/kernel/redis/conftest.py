"""Fixtures of the Redis tests: settings pointing at the real Redis under a namespace of the
test's own, a proxy to cut, and cleanup of exactly the keys the test created."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from allot.kernel.redis import connect
from tests.tcp_proxy import TcpProxy


@pytest.fixture
async def redis(redis_url: str, service_namespace: str) -> AsyncIterator[object]:
    client = connect(redis_url, 2.0)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{service_namespace}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    server = await TcpProxy.for_url(redis_url).start()
    yield server
    await server.close()
