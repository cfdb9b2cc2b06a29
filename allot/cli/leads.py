"""`allot leads import FILE`: take leads in from a CSV file, with a progress bar, a summary and
the rejected lines. Exit code 0: every row imported; 1: some rows rejected (or the import
failed); 2: the file cannot be read as CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from allot.cli.runtime import (
    CLI_ACTOR,
    console,
    errors,
    load_settings,
    print_rows,
    progress,
    require_current_schema,
    run,
)
from allot.kernel.context import bound
from allot.kernel.db.engine import Database

leads_app = typer.Typer(help="Leads.", no_args_is_help=True)

EXIT_REJECTED = 1
EXIT_UNREADABLE = 2
SHOWN_REJECTS = 200  # on a terminal; the import's page and API keep up to 10,000


@leads_app.command("import")
def import_leads(
    file: Annotated[
        Path, typer.Argument(help="CSV file (`,` `;` or tab; UTF-8, UTF-8 with BOM or cp1251)")
    ],
    source: Annotated[str, typer.Option(help="Source of rows without a source column")] = "import",
    batch_size: Annotated[int, typer.Option(help="Rows per transaction", min=1, max=20_000)] = 2000,
) -> None:
    """Import leads from a CSV file: each row is imported whole or rejected with its line number
    and the reason. Header names may be English or Russian (name/ФИО, phone/телефон,
    email/почта, amount/сумма in roubles, term/срок in months, priority/приоритет, source,
    external_id); other columns become custom attributes."""
    from allot.app import load_contexts
    from allot.contexts.leads import csv_import

    settings = load_settings()
    if not file.is_file():
        errors.print(f"[bold red]error:[/] no such file: {escape(str(file))}")
        raise typer.Exit(EXIT_UNREADABLE)
    require_current_schema(settings)
    load_contexts()

    async def work() -> csv_import.ImportReport:
        database = Database(settings.resolved_database_url, pool_size=1, read_pool_size=1)
        try:
            with bound(actor=CLI_ACTOR), progress() as bar:
                task = bar.add_task("Importing", total=None)
                printed = [0]

                def on_progress(state: csv_import.Progress) -> None:
                    bar.update(task, completed=state.processed, total=state.total)
                    if not console.is_terminal and state.processed - printed[0] >= 100_000:
                        printed[0] = state.processed
                        console.print(f"{state.processed} rows processed")

                return await csv_import.import_file(
                    database,
                    file,
                    source=source,
                    batch_size=batch_size,
                    on_progress=on_progress,
                )
        finally:
            await database.dispose()

    report = run(work())
    if report.error is not None and report.total == 0:
        errors.print(f"[bold red]error:[/] {escape(report.error)}")
        raise typer.Exit(EXIT_UNREADABLE)
    if report.rejects:
        shown = report.rejects[:SHOWN_REJECTS]
        print_rows(
            ("line", "field", "reason"),
            [(str(r["line"]), r["field"], r["reason"]) for r in shown],
        )
        if len(report.rejects) > len(shown) or report.rejects_truncated:
            console.print(
                f"(showing {len(shown)} rejected entries; import {report.import_id} keeps the "
                f"first {len(report.rejects)}: see /leads/import/{report.import_id})"
            )
    console.print(
        f"Import {report.import_id}: {report.total} rows, {report.imported} imported, "
        f"{report.rejected} rejected."
    )
    if report.error is not None:
        errors.print(f"[bold red]error:[/] {escape(report.error)}")
        raise typer.Exit(EXIT_REJECTED)
    if report.rejected:
        raise typer.Exit(EXIT_REJECTED)
