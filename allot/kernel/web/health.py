"""/healthz (the process is up), /readyz (its dependencies answer), /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from allot.kernel.db.engine import Database
from allot.kernel.events.dispatcher import pending_count
from allot.kernel.timers import pending_timers

router = APIRouter(include_in_schema=False)

DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671, "redis": 6379, "rediss": 6380}


def tcp_probe(url: str) -> Callable[[], Awaitable[None]]:
    """A readiness probe for a configured service: its port accepts a TCP connection."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or DEFAULT_PORTS.get(parts.scheme, 0)

    async def probe() -> None:
        _reader, writer = await asyncio.open_connection(host, port)
        writer.close()
        await writer.wait_closed()

    return probe


DB_POOL_CHECKED_OUT = Gauge("allot_db_pool_checked_out", "Database connections in use")
DB_POOL_SIZE = Gauge("allot_db_pool_size", "Database pool size")
OUTBOX_BACKLOG = Gauge("allot_outbox_backlog", "Outbox events not yet dispatched")
TIMERS_PENDING = Gauge("allot_timers_pending", "Durable timers waiting to fire")


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    database: Database = request.app.state.database
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(database.ping(), timeout=3)
        checks["database"] = "ok"
    except Exception as exc:  # readiness reports, it does not raise
        checks["database"] = f"error: {type(exc).__name__}"
    for name, probe in getattr(request.app.state, "readiness_probes", {}).items():
        try:
            await asyncio.wait_for(probe(), timeout=3)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "not-ready", "checks": checks},
                        status_code=200 if ready else 503)  # fmt: skip


@router.get("/metrics")
async def metrics(request: Request) -> PlainTextResponse:
    database: Database = request.app.state.database
    pool = database.pool_status()
    DB_POOL_CHECKED_OUT.set(pool["checked_out"])
    DB_POOL_SIZE.set(pool["size"])
    async with database.reader() as session:
        OUTBOX_BACKLOG.set(await pending_count(session))
        TIMERS_PENDING.set(await pending_timers(session))
    return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)
