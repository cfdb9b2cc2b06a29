"""`allot api | worker | relay | timers`: one process per role, for running Allot as many
processes on PostgreSQL (+ RabbitMQ); `allot serve` remains the all-in-one process.

What each role runs is decided in `allot.kernel.runtime` (one place). The background roles share
one lifecycle:
- refuse to start when the role cannot run with this configuration, or when the schema is not
  at head (migrating is the job of `allot migrate`, run once, not of every replica);
- log one line when started (role, services, masked URLs, consumer groups);
- on SIGTERM or SIGINT stop taking new work and drain: each service finishes and commits the
  unit of work it is in, then the process logs one line and exits 0. A second signal stops at
  once (nothing is lost either way: an unfinished claim runs out and the work is done again,
  and the inbox keeps it from being applied twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from allot.cli.runtime import fail, load_settings, mask_url, require_current_schema, user_errors
from allot.cli.serve import run_server
from allot.kernel import runtime
from allot.kernel.config import Settings
from allot.kernel.db.engine import Database
from allot.kernel.logging import configure_logging, get_logger

log = get_logger("allot.process")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
HEARTBEAT_SECONDS = 5.0  # the probes in deploy/ allow 30 s: six missed beats


def api(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Server processes (one per core)")
    ] = 1,
    migrate: Annotated[bool, typer.Option(help="Apply pending migrations before serving")] = False,
) -> None:
    """Serve the API and the web UI only (PostgreSQL): events and timers run in other roles."""
    settings = load_settings()
    with user_errors():
        _check(settings, "api")
    run_server(host=host, port=port, reload=False, migrate=migrate, workers=workers,
               background=False)  # fmt: skip


def worker(
    consumers: Annotated[
        str | None,
        typer.Option(
            help="Consumer groups to run, comma-separated (broker mode; default: every group)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Handle events: from RabbitMQ in broker mode, else straight from the outbox (PostgreSQL)."""
    groups = consumers.split(",") if consumers is not None else None
    _run_role("worker", groups=groups)


def relay() -> None:
    """Publish committed outbox events to RabbitMQ (broker mode)."""
    _run_role("relay")


def timers() -> None:
    """Fire durable timers when due; any number of replicas fire each timer exactly once."""
    _run_role("timers")


def _check(settings: Settings, role: runtime.Role, groups: list[str] | None = None) -> None:
    try:
        runtime.check_role(role, settings, groups=groups)
    except runtime.RoleRefused as exc:
        fail(str(exc))


def _run_role(role: runtime.Role, *, groups: list[str] | None = None) -> None:
    from allot.app import load_contexts  # registers every context's handlers and timer tasks

    settings = load_settings()
    load_contexts()
    with user_errors():
        _check(settings, role, groups)
    require_current_schema(settings)
    configure_logging(settings.log_level, settings.log_json)
    with user_errors():
        asyncio.run(_serve_role(role, settings, groups))


async def _serve_role(role: runtime.Role, settings: Settings, groups: list[str] | None) -> None:
    database = Database(
        settings.resolved_database_url,
        pool_size=settings.database_pool_size,
        read_pool_size=settings.sqlite_read_pool_size,
    )
    services = runtime.compose(role, database, settings, groups=groups)
    stop = asyncio.Event()
    received: list[str] = []
    loop = asyncio.get_running_loop()

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum.name)
        stop.set()
        # A second signal gets the default action: stop at once.
        for each in STOP_SIGNALS:
            loop.remove_signal_handler(each)

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    groups_field: dict[str, object] = {}
    heartbeat: asyncio.Task[None] | None = None
    try:
        await services.start()
        if settings.heartbeat_file:
            heartbeat = asyncio.create_task(_beat(Path(settings.heartbeat_file)))
        if role == "worker":  # which consumer groups this worker runs
            groups_field = {"groups": list(services.groups) if services.groups else "all"}
        log.info(
            "allot process started",
            role=role,
            services=services.names,
            **groups_field,
            database_url=mask_url(settings.resolved_database_url),
            broker_url=mask_url(settings.broker_url) or None,
            redis_url=mask_url(settings.redis_url) or None,
        )
        await stop.wait()
        draining_since = time.monotonic()
        await services.stop()
        log.info(
            "allot process stopped",
            role=role,
            signal=received[0],
            drain_ms=round((time.monotonic() - draining_since) * 1000),
        )
    finally:
        await services.stop()  # a no-op after a clean stop; drains after a failed start
        if heartbeat is not None:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await asyncio.to_thread(Path(settings.heartbeat_file).unlink, missing_ok=True)
        await database.dispose()


async def _beat(path: Path) -> None:
    """Touch `path` every HEARTBEAT_SECONDS while the event loop runs (and so while it drains):
    a liveness probe that finds it older than a few beats knows the process is stuck."""
    while True:
        await asyncio.to_thread(path.touch)
        await asyncio.sleep(HEARTBEAT_SECONDS)
