"""Alembic environment. Normally handed an open connection by `allot.kernel.migrations` (one
transaction per command); run by the `alembic` CLI it opens its own, from `-x url=...`,
alembic.ini's `sqlalchemy.url`, or the app's settings."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from allot.kernel.config import get_settings
from allot.kernel.db.engine import normalize_url
from allot.kernel.migrations import add_skipped_indexes, context_options, migration_engine
from allot.migrations import target_metadata

config = context.config
metadata = target_metadata()


def _report_steps(**kwargs: Any) -> None:
    on_step = config.attributes.get("on_step")
    if on_step is None:
        return
    step = kwargs["step"]  # the migration whose upgrade() or downgrade() just ran
    doc = step.up_revision.doc if step.up_revision is not None else ""
    on_step(f"{'applied' if step.is_upgrade else 'reverted'} {step.up_revision_id}: {doc}")


def _complete_revision(_context: Any, _revision: Any, directives: list[Any]) -> None:
    script = directives[0]
    add_skipped_indexes(script.upgrade_ops, metadata)
    if config.attributes.get("skip_empty") and script.upgrade_ops.is_empty():
        directives[:] = []


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        on_version_apply=_report_steps,
        process_revision_directives=_complete_revision,
        **context_options(connection.dialect.name),
    )


def _url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or get_settings().resolved_database_url
    )
    return normalize_url(url)


def run_offline() -> None:
    url = _url()
    dialect = make_url(url).get_backend_name()
    context.configure(
        url=url, target_metadata=metadata, literal_binds=True, **context_options(dialect)
    )
    with context.begin_transaction():
        context.run_migrations()


def _migrate(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_own_connection() -> None:
    engine = migration_engine(_url())
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_migrate)
    finally:
        await engine.dispose()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
    else:
        asyncio.run(_run_own_connection())


if context.is_offline_mode():
    run_offline()
else:
    run_online()
