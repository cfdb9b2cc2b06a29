"""Ports and a real HTTP server for tests that need sockets (shared: one way to do each)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn


def free_port() -> int:
    """A TCP port nothing listens on now (the OS's pick), for a server the test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(app: Any, *, bound: float = 10.0) -> AsyncIterator[str]:
    """The app behind a real uvicorn server in this event loop, its lifespan off (the test runs
    the app's services itself); yields the base URL. For what httpx's ASGI transport cannot
    show: it buffers whole responses, so a server-sent event stream needs a real server."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", log_config=None, log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(bound):
            while not server.started:
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, bound)
