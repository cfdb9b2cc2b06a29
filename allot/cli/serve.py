"""`allot serve`: the all-in-one process (API, UI, event dispatcher and timers) under uvicorn.

Before serving, the schema is brought to the newest revision: always on SQLite (a single-process
install should just work), on PostgreSQL only with `--migrate` (several processes share it, so
migrating is an operator's decision); otherwise a schema that is behind refuses to start.
"""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
import uvicorn
from sqlalchemy.engine import make_url

from allot.cli.runtime import apply_migrations, console, fail, load_settings, user_errors
from allot.kernel import migrations


def prepare_schema(url: str, *, migrate_postgres: bool) -> None:
    """Make sure the schema is at head before serving (see the module docstring)."""
    state = migrations.status(url)
    if not state.known:
        fail(
            f"the database is at revision {state.current}, which this version of Allot does not "
            "know (was it migrated by a newer version?)"
        )
    if state.unmanaged:
        fail(
            "the database has tables but no migration history (made without `allot migrate`?); "
            "use an empty database"
        )
    if state.up_to_date:
        console.print(f"Database schema up to date (revision {state.current}).")
        return
    is_sqlite = make_url(url).get_backend_name() == "sqlite"
    if not (is_sqlite or migrate_postgres):
        fail(
            f"the database schema is at revision {state.current or 'none (empty database)'} but "
            f"this version needs {state.head}: run `allot migrate` first, or start with "
            "`allot serve --migrate`"
        )
    apply_migrations(url)
    if state.is_empty:
        console.print(f"Database schema created at revision {state.head}.")
    else:
        console.print(f"Database schema upgraded from {state.current} to {state.head}.")


def run_server(
    *, host: str, port: int, reload: bool, migrate: bool, workers: int = 1, background: bool = True
) -> None:
    """Serve HTTP; with `background`, each process also runs the all-in-one role's background
    services (`allot serve`), else none (`allot api`, see allot/kernel/runtime.py)."""
    settings = load_settings()
    is_sqlite = make_url(settings.resolved_database_url).get_backend_name() == "sqlite"
    with user_errors():
        if workers > 1 and (is_sqlite or reload):
            fail(
                "--workers needs PostgreSQL (SQLite has one writer, so one process serves it "
                "best) and cannot be combined with --reload"
            )
        if workers > 1 and background and settings.broker_url:
            fail(
                "`allot serve --workers N` in broker mode would run N outbox relays, and events "
                "keep their order per client through one: run `allot api --workers N` with one "
                "`allot relay`, and `allot worker` and `allot timers` beside them"
            )
        prepare_schema(settings.resolved_database_url, migrate_postgres=migrate)
    console.print(f"Allot is serving on http://{host}:{port}/ (Ctrl+C stops it).")
    # uvicorn drains on SIGTERM, then raises the signal again for the handler it found: by
    # default that kills the process (exit 143), and an orderly stop would look like a crash to
    # a supervisor (compose `restart: on-failure`, exit-code alerts). Found this handler, it
    # exits 0; before uvicorn takes the signal over, it stops the start-up the same way.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        "allot.app:create_app" if background else "allot.app:create_api_app",
        factory=True,
        host=host,
        port=port,
        reload=reload,
        reload_dirs=[str(Path(__file__).resolve().parents[1])] if reload else None,
        # Logging is configured by the app (JSON lines, personal data masked), uvicorn's included.
        log_config=None,
        # The app logs every request itself (with its request id, see kernel/web/middleware.py);
        # uvicorn's access logger is silenced there, yet would format each request's line (≈3 µs)
        # before finding that out. The event loop (uvloop) and HTTP parser (httptools) are
        # uvicorn's defaults when installed, as uvicorn[standard] does.
        access_log=False,
        proxy_headers=True,
        # Under `allot serve` each worker is a whole Allot process (API, dispatcher or broker
        # worker, timers); outbox claims and timer firing are conditional, so workers share the
        # work without doing it twice.
        workers=workers if workers > 1 else None,
    )


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development)")] = False,
    migrate: Annotated[
        bool, typer.Option(help="Apply pending migrations on PostgreSQL before serving")
    ] = False,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Server processes (PostgreSQL only; one per core)")
    ] = 1,
) -> None:
    """Serve the API and the web UI, with the event dispatcher and timers in-process."""
    run_server(host=host, port=port, reload=reload, migrate=migrate, workers=workers)
