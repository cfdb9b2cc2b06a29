"""`allot migrate`: move the database schema between revisions and show where it stands."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from allot.cli.runtime import apply_migrations, console, fail, load_settings, mask_url, user_errors
from allot.kernel import migrations

app = typer.Typer(help="Database schema migrations (default: upgrade to the newest revision).")


def upgrade_to(url: str, revision: str = "head") -> None:
    before = migrations.status(url)
    if not before.known:
        fail(f"the database is at revision {before.current}, which this version does not know")
    if before.unmanaged:
        fail(
            "the database has tables but no migration history (made without `allot migrate`?); "
            "use an empty database"
        )
    steps = apply_migrations(url, revision)
    for line in steps:
        console.print(f"  {line}")
    after = migrations.current(url)
    if steps:
        console.print(f"Database schema upgraded from {before.current or 'empty'} to {after}.")
    else:
        console.print(f"Database schema already at {after or 'base'}; nothing to do.")


@app.callback(invoke_without_command=True)
def default(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        with user_errors():
            upgrade_to(load_settings().resolved_database_url)


@app.command()
def upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
) -> None:
    """Apply migrations up to REVISION (default: head)."""
    with user_errors():
        upgrade_to(load_settings().resolved_database_url, revision)


@app.command()
def downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision; `base` removes everything")],
) -> None:
    """Undo migrations down to REVISION."""
    with user_errors():
        url = load_settings().resolved_database_url
        before = migrations.current(url)
        for line in apply_migrations(url, revision, downgrade=True):
            console.print(f"  {line}")
        after = migrations.current(url)
        console.print(f"Database schema downgraded from {before or 'base'} to {after or 'base'}.")


@app.command()
def current() -> None:
    """Show the database's revision and whether it is the newest."""
    with user_errors():
        url = load_settings().resolved_database_url
        state = migrations.status(url)
        console.print(f"Database: {mask_url(url)}")
        console.print(f"Current revision: {state.current or 'none (empty database)'}")
        console.print(f"Newest revision:  {state.head or 'none'}")
        if state.up_to_date:
            console.print("Up to date.")
        elif not state.known:
            console.print("The database is at a revision this version does not know.")
        else:
            console.print("Behind: run `allot migrate`.")


@app.command()
def history() -> None:
    """List every revision, oldest first."""
    url = load_settings().resolved_database_url
    try:
        applied = migrations.current(url)
    except Exception:  # the list is still useful without the database
        applied = None
    table = Table("revision", "revises", "message", "")
    for info in migrations.history():
        marker = "← database" if info.revision == applied else ""
        table.add_row(info.revision, info.down_revision or "-", escape(info.message), marker)
    console.print(table)


@app.command()
def revision(
    message: Annotated[str, typer.Argument(help="What the revision does, e.g. 'add leads'")],
    rev_id: Annotated[str | None, typer.Option(help="Revision id (default: next number)")] = None,
) -> None:
    """(Developers) Autogenerate a revision from the models; review it before committing."""
    with user_errors():
        path = migrations.make_revision(message, rev_id=rev_id)
    if path is None:
        console.print("The models match the migrations; no revision written.")
        raise typer.Exit(0)
    typer.echo(str(path))
