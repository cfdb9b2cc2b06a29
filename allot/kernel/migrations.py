"""Schema migrations driven from code: Alembic without an alembic.ini.

The revision scripts live in the `allot/migrations/` package, so `allot migrate` works from an
installed wheel. Every helper opens ONE connection in ONE transaction and hands it to Alembic
(`config.attributes["connection"]`), so a failed upgrade leaves the schema untouched on both
backends (SQLite's DDL is transactional once the driver stops issuing its own BEGINs).

These functions are synchronous (they run their own event loop): call them from a CLI command or
a plain test, not from inside a running loop.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.operations import ops
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Connection, Index, MetaData, event, inspect
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from allot.kernel.db.engine import normalize_url
from allot.kernel.db.types import UTCDateTime

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE = "alembic_version"

StepCallback = Callable[[str], None]
T = TypeVar("T")


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    """Render our portable types as plain SQLAlchemy types, so revisions never import Allot code
    (a revision must keep working after the model code it was generated from has changed)."""
    if type_ != "type":
        return False
    if isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if isinstance(obj, JSONB):
        # Alembic's default repr names `Text()` without importing it.
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return "postgresql.JSONB()"
    return False


def _is_expression_index(index: Index) -> bool:
    return not all(isinstance(part, Column | str) for part in index.expressions)


def _comparable_on_sqlite(
    obj: Any, _name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """SQLite cannot reflect expression indexes (`text("priority DESC")`), so comparing them
    reports false drift; they are compared on PostgreSQL."""
    if type_ != "index":
        return True
    defined = compare_to if reflected else obj
    return defined is None or not _is_expression_index(defined)


def context_options(dialect: str) -> dict[str, Any]:
    """Options shared by env.py and the drift check, so both compare the same way."""
    options: dict[str, Any] = {
        "compare_type": True,
        # Batch operations are what SQLite needs for ALTER; on PostgreSQL they run as plain
        # ALTERs. Rendering them always keeps one history valid on both backends.
        "render_as_batch": True,
        "render_item": render_item,
        "version_table": VERSION_TABLE,
    }
    if dialect == "sqlite":
        options["include_object"] = _comparable_on_sqlite
    return options


def add_skipped_indexes(upgrade_ops: ops.UpgradeOps, metadata: MetaData) -> None:
    """Autogenerate against SQLite leaves out expression indexes (`text("priority DESC")`),
    which SQLite cannot reflect; put them back for the tables a revision creates."""
    created = [op.table_name for op in upgrade_ops.ops if isinstance(op, ops.CreateTableOp)]
    for table_name in created:
        modify = next(
            (op for op in upgrade_ops.ops
             if isinstance(op, ops.ModifyTableOps) and op.table_name == table_name),
            None,
        )  # fmt: skip
        if modify is None:
            modify = ops.ModifyTableOps(table_name, [])
            upgrade_ops.ops.append(modify)
        present = {op.index_name for op in modify.ops if isinstance(op, ops.CreateIndexOp)}
        for index in sorted(metadata.tables[table_name].indexes, key=lambda i: str(i.name)):
            if index.name not in present:
                modify.ops.append(ops.CreateIndexOp.from_index(index))


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    # Revisions are numbered (0001, 0002, ...) and named after their message.
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    config.set_main_option("truncate_slug_length", "40")
    return config


def _sqlite_begins_transactions(engine: AsyncEngine) -> None:
    # pysqlite runs DDL outside any transaction unless we take BEGIN over from it.
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def migration_engine(url: str) -> AsyncEngine:
    """A short-lived engine for schema work (no pool; SQLite DDL made transactional)."""
    normalized = normalize_url(url)
    parsed = make_url(normalized)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(normalized, poolclass=NullPool)
    if parsed.get_backend_name() == "sqlite":
        _sqlite_begins_transactions(engine)
    return engine


async def _in_transaction(url: str, work: Callable[[Connection], T]) -> T:
    engine = migration_engine(url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(work)
    finally:
        await engine.dispose()


def _run(url: str, work: Callable[[Connection], T]) -> T:
    return asyncio.run(_in_transaction(url, work))


def _with_connection(
    connection: Connection, on_step: StepCallback | None = None, **attributes: Any
) -> Config:
    config = alembic_config()
    config.attributes["connection"] = connection
    config.attributes["on_step"] = on_step
    config.attributes.update(attributes)
    return config


def upgrade(url: str, revision: str = "head", *, on_step: StepCallback | None = None) -> None:
    """Apply migrations up to `revision`; `on_step` hears about each revision as it is applied."""
    _run(url, lambda conn: command.upgrade(_with_connection(conn, on_step), revision))


def downgrade(url: str, revision: str, *, on_step: StepCallback | None = None) -> None:
    """Undo migrations down to `revision` (`base` removes every table the migrations made)."""
    _run(url, lambda conn: command.downgrade(_with_connection(conn, on_step), revision))


def _current(conn: Connection) -> str | None:
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def current(url: str) -> str | None:
    """The database's revision, or None when it has never been migrated."""
    return _run(url, _current)


def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str | None:
    """The newest revision this code knows."""
    return scripts().get_current_head()


@dataclass(frozen=True, slots=True)
class RevisionInfo:
    revision: str
    down_revision: str | None
    message: str
    path: str


def history() -> list[RevisionInfo]:
    """Every known revision, oldest first."""
    found = [
        RevisionInfo(
            revision=script.revision,
            down_revision=script.down_revision if isinstance(script.down_revision, str) else None,
            message=script.doc or "",
            path=script.path,
        )
        for script in scripts().walk_revisions()
    ]
    return list(reversed(found))


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    current: str | None
    head: str | None
    has_tables: bool  # tables besides Alembic's own bookkeeping
    known: bool  # the current revision exists in this code's history

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    @property
    def is_empty(self) -> bool:
        return self.current is None and not self.has_tables

    @property
    def unmanaged(self) -> bool:
        """Tables exist but were never created by migrations (e.g. `metadata.create_all`)."""
        return self.current is None and self.has_tables


def _known_revision(revision: str) -> bool:
    try:
        return scripts().get_revision(revision) is not None
    except Exception:  # alembic raises several kinds for an id it does not know
        return False


def status(url: str) -> SchemaStatus:
    """Where the database stands against this code's migrations (never raises for an unknown
    revision: that is reported as `known=False`, e.g. when newer code migrated it)."""

    def work(conn: Connection) -> tuple[str | None, bool]:
        tables = set(inspect(conn).get_table_names()) - {VERSION_TABLE}
        return _current(conn), bool(tables)

    revision, has_tables = _run(url, work)
    known = revision is None or _known_revision(revision)
    return SchemaStatus(current=revision, head=head(), has_tables=has_tables, known=known)


def compare(url: str, metadata: MetaData) -> list[Any]:
    """Differences between the database's schema and `metadata` (empty when they agree)."""

    def work(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(conn, opts=context_options(conn.dialect.name))
        return list(compare_metadata(context, metadata))

    return _run(url, work)


def next_revision_id() -> str:
    return f"{len(history()) + 1:04d}"


def make_revision(message: str, *, rev_id: str | None = None) -> Path | None:
    """Autogenerate a revision from the models against a scratch SQLite database at head.

    Returns the new script's path, or None when the models match the migrations already.
    """
    rev_id = rev_id or next_revision_id()
    with tempfile.TemporaryDirectory(prefix="allot-makemigration-") as scratch:
        url = f"sqlite+aiosqlite:///{Path(scratch) / 'scratch.sqlite3'}"
        upgrade(url)

        def work(conn: Connection) -> Any:
            config = _with_connection(conn, skip_empty=True)
            return command.revision(config, message=message, autogenerate=True, rev_id=rev_id)

        written = _run(url, work)
    if written is None or isinstance(written, list):
        return None
    return Path(written.path)
