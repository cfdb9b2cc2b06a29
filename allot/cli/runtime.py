"""What every CLI command shares: settings, the database unit of work, schema checks, output,
and turning user errors into one clear line (exit code 1) instead of a traceback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, NoSuchModuleError
from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel import migrations
from allot.kernel.config import Settings, get_settings
from allot.kernel.context import Actor, bound
from allot.kernel.db.engine import Database
from allot.kernel.errors import AllotError
from allot.kernel.logging import configure_logging

T = TypeVar("T")

# Every change the CLI makes is audited as done by this actor.
CLI_ACTOR = Actor(kind="system", id=None, label="cli")

console = Console(highlight=False, soft_wrap=True)
errors = Console(stderr=True, highlight=False, soft_wrap=True)


class CliError(Exception):
    """A problem the user can fix; printed as one line, exit code 1."""


def fail(message: str) -> NoReturn:
    raise CliError(message)


def quiet_logging() -> None:
    """Keep the terminal for the command's own output: only warnings from the libraries."""
    configure_logging("WARNING", json=False)


def load_settings() -> Settings:
    with user_errors():
        try:
            settings = get_settings()
        except ValidationError as exc:
            problems = "; ".join(
                f"ALLOT_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                for e in exc.errors()
            )
            fail(f"invalid configuration: {problems}")
    quiet_logging()
    return settings


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, for printing."""
    if not url:
        return ""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL (amqp://, redis://): mask by hand
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, AllotError):
        # Field paths are the API's ("body.email"); on the command line the option is enough.
        details = "; ".join(f"{e.field.removeprefix('body.')}: {e.message}" for e in exc.errors)
        return details or exc.detail or exc.title
    if isinstance(exc, DBAPIError):
        return f"database error: {exc.orig}".splitlines()[0]
    if isinstance(exc, OSError | TimeoutError):
        return f"cannot reach the database ({type(exc).__name__}: {exc})"
    return str(exc)


@contextmanager
def user_errors() -> Iterator[None]:
    """Print expected failures as `error: ...` on stderr and exit 1; let bugs raise."""
    try:
        yield
    except (CliError, AllotError, DBAPIError, OSError, TimeoutError) as exc:
        errors.print(f"[bold red]error:[/] {escape(_describe(exc))}")
        raise typer.Exit(1) from None
    except NoSuchModuleError as exc:
        errors.print(f"[bold red]error:[/] unsupported database URL ({escape(str(exc))})")
        raise typer.Exit(1) from None


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    with user_errors():
        return asyncio.run(coroutine)


async def in_transaction(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """One unit of work as the CLI actor: commit on success, roll back on any error."""
    from allot.app import load_contexts  # registers every context's models and handlers

    load_contexts()
    database = Database(settings.resolved_database_url, pool_size=1, read_pool_size=1)
    try:
        with bound(actor=CLI_ACTOR):
            async with database.transaction() as session:
                return await work(session)
    finally:
        await database.dispose()


def transaction(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one committed transaction, after checking the schema is migrated."""
    require_current_schema(settings)
    return run(in_transaction(settings, work))


def require_current_schema(settings: Settings) -> None:
    with user_errors():
        state = migrations.status(settings.resolved_database_url)
        if not state.up_to_date:
            fail(
                f"the database schema is at revision {state.current or 'none'}, this version "
                f"needs {state.head}: run `allot migrate` first"
            )


def progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # no bar redraws in logs and pipes
    )


def apply_migrations(url: str, revision: str = "head", *, downgrade: bool = False) -> list[str]:
    """Run migrations with a progress bar; returns one line per revision applied or reverted."""
    steps: list[str] = []
    with progress() as bar:
        total = max(len(migrations.history()), 1)
        task = bar.add_task("Downgrading" if downgrade else "Migrating", total=total)

        def on_step(line: str) -> None:
            steps.append(line)
            bar.advance(task)

        with user_errors():
            if downgrade:
                migrations.downgrade(url, revision, on_step=on_step)
            else:
                migrations.upgrade(url, revision, on_step=on_step)
    return steps


def print_rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table on a terminal; tab-separated lines in a pipe (for grep, cut and scripts)."""
    if console.is_terminal:
        table = Table(*header)
        for row in rows:
            table.add_row(*(escape(cell) for cell in row))
        console.print(table)
        return
    for row in (header, *rows):
        typer.echo("\t".join(row))
