"""`allot check`: what configuration is in force and whether the services it names answer.

Exit code 1 when the database is unreachable (the one dependency nothing works without);
an unreachable broker or Redis is reported but, like a schema behind head, only warned about.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

import typer
from pydantic import SecretStr
from rich.markup import escape
from rich.table import Table

from allot.cli.runtime import console, load_settings, mask_url
from allot.kernel import migrations
from allot.kernel.config import Settings
from allot.kernel.db.engine import Database

URL_FIELDS = frozenset({"database_url", "broker_url", "redis_url"})
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671, "redis": 6379, "rediss": 6380}
TIMEOUT_SECONDS = 5.0


def settings_table(settings: Settings) -> Table:
    table = Table(title="Configuration (ALLOT_* environment variables, .env)")
    table.add_column("setting", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            secret_set = bool(value.get_secret_value())
            shown = "set (hidden)" if secret_set else "not set (generated in data_dir)"
        elif name in URL_FIELDS:
            shown = mask_url(str(value)) or "(empty)"
        else:
            shown = str(value)
        table.add_row(f"ALLOT_{name.upper()}", shown)
    table.add_row("(database in use)", mask_url(settings.resolved_database_url))
    return table


async def _ping(url: str) -> str:
    database = Database(url, pool_size=1, read_pool_size=1)
    try:
        await asyncio.wait_for(database.ping(), timeout=TIMEOUT_SECONDS)
        return database.dialect
    finally:
        await database.dispose()


def check_database(url: str) -> bool:
    try:
        dialect = asyncio.run(_ping(url))
    except Exception as exc:
        where, error = escape(mask_url(url)), escape(f"{type(exc).__name__}: {exc}")
        console.print(f"[red]✗[/] database unreachable at {where}: {error}")
        return False
    console.print(f"[green]✓[/] database reachable ({dialect})")
    try:
        state = migrations.status(url)
    except Exception as exc:
        console.print(f"[yellow]![/] could not read the schema revision: {escape(str(exc))}")
        return True
    if state.up_to_date:
        console.print(f"[green]✓[/] schema at the newest revision ({state.head})")
    elif not state.known:
        console.print(f"[yellow]![/] schema at {state.current}, unknown to this version")
    else:
        console.print(
            f"[yellow]![/] schema at {state.current or 'none'}, newest is {state.head}: "
            "run `allot migrate`"
        )
    return True


def check_tcp_service(label: str, url: str) -> None:
    if not url:
        console.print(f"[dim]-[/] {label}: not configured (in-process equivalent in use)")
        return
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or DEFAULT_PORTS.get(parts.scheme)
    if port is None:
        console.print(f"[yellow]![/] {label}: cannot tell the port of {mask_url(url)}")
        return
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_SECONDS):
            pass
    except OSError as exc:
        console.print(
            f"[yellow]![/] {label} configured but unreachable at {host}:{port} ({escape(str(exc))})"
        )
        return
    console.print(f"[green]✓[/] {label} reachable at {host}:{port}")


def check() -> None:
    """Print the configuration (secrets masked) and check the database, broker and Redis."""
    settings = load_settings()
    console.print(settings_table(settings))
    database_ok = check_database(settings.resolved_database_url)
    check_tcp_service("message broker", settings.broker_url)
    check_tcp_service("Redis", settings.redis_url)
    if not database_ok:
        raise typer.Exit(1)
