"""The Alembic history builds exactly the schema the models describe, on both backends, and
comes apart cleanly. Models and migrations therefore cannot drift apart unnoticed: a model change
without a revision fails here (`./dev makemigration "..."` writes the revision)."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from allot.kernel import migrations
from allot.migrations import target_metadata
from tests.conftest import BACKENDS, IN_CI, PG_ADMIN_URL, _pg_state, _postgres_reachable


def _require_postgres() -> None:
    if not _postgres_reachable():
        if IN_CI:
            pytest.fail(f"CI=true but PostgreSQL is unreachable: {_pg_state['error']}")
        _pg_state["skipped"] += 1
        pytest.skip("PostgreSQL unreachable")


async def _admin(statement: str) -> None:
    admin = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await admin.dispose()


@contextmanager
def scratch_postgres_database(purpose: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this xdist worker, dropped afterwards."""
    _require_postgres()
    worker = re.sub(r"[^a-z0-9_]", "_", os.environ.get("PYTEST_XDIST_WORKER", "main").lower())
    name = f"allot_{purpose}_{worker}_{os.getpid()}"
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_ADMIN_URL.rpartition('/')[0]}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "postgresql":
        with scratch_postgres_database("migrations") as url:
            yield url
    else:
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrations.sqlite3'}"


def table_names(url: str) -> set[str]:
    async def read() -> set[str]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
        finally:
            await engine.dispose()

    return asyncio.run(read())


def assert_audit_trail_is_append_only(url: str) -> None:
    """The migrated schema carries the same guard triggers as metadata.create_all does."""

    async def trigger_names() -> set[str]:
        engine = create_async_engine(url)
        query = (
            "SELECT name FROM sqlite_master WHERE type = 'trigger'"
            if url.startswith("sqlite")
            else "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
        )
        try:
            async with engine.connect() as conn:
                return set((await conn.execute(text(query))).scalars())
        finally:
            await engine.dispose()

    assert {"audit_entries_no_delete", "audit_entries_frozen_columns"} <= asyncio.run(
        trigger_names()
    )


# SQLite cannot reflect expression indexes; the PostgreSQL variant compares them.
SQLITE_SKIPS_EXPRESSION_INDEXES = pytest.mark.filterwarnings(
    "ignore:autogenerate skipping metadata-specified expression-based index:UserWarning"
)


@SQLITE_SKIPS_EXPRESSION_INDEXES
def test_migrations_build_the_models_schema_and_come_apart_cleanly(
    empty_database_url: str,
) -> None:
    url = empty_database_url
    head = migrations.head()
    assert head is not None, "no migrations at all"

    migrations.upgrade(url)
    assert migrations.current(url) == head
    assert_audit_trail_is_append_only(url)
    drift = migrations.compare(url, target_metadata())
    assert drift == [], (
        f'Models and migrations differ; write a revision with `./dev makemigration "..."`:\n{drift}'
    )

    migrations.downgrade(url, "base")
    assert table_names(url) - {migrations.VERSION_TABLE} == set()
    assert migrations.current(url) is None

    migrations.upgrade(url)
    assert migrations.current(url) == head
    assert migrations.compare(url, target_metadata()) == []


@SQLITE_SKIPS_EXPRESSION_INDEXES
def test_the_drift_check_reports_a_table_the_migrations_lack(empty_database_url: str) -> None:
    migrations.upgrade(empty_database_url)
    metadata = MetaData()
    for table in target_metadata().tables.values():
        table.to_metadata(metadata)
    Table("kernel_unmigrated", metadata, Column("id", Integer, primary_key=True))

    drift = migrations.compare(empty_database_url, metadata)

    assert ("add_table", "kernel_unmigrated") in [(d[0], getattr(d[1], "name", "")) for d in drift]


def test_a_failed_upgrade_leaves_the_database_as_it_was(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each command runs in one transaction, so a failure midway undoes the DDL before it."""

    def fail_midway(line: str) -> None:
        raise RuntimeError(f"stop after {line}")

    with pytest.raises(RuntimeError, match="stop after applied"):
        migrations.upgrade(empty_database_url, on_step=fail_midway)

    assert table_names(empty_database_url) - {migrations.VERSION_TABLE} == set()
    assert migrations.current(empty_database_url) is None


def test_the_history_is_one_line_of_self_contained_revisions() -> None:
    assert len(migrations.scripts().get_heads()) == 1, "two revisions share a parent: rebase one"
    for info in migrations.history():
        source = Path(info.path).read_text()
        # Revisions outlive the code they were generated from: they may not import it.
        assert not re.search(r"^\s*(from|import) allot\b", source, re.MULTILINE), info.path


def test_queue_tables_are_vacuumed_after_a_thousand_changes_on_postgresql() -> None:
    """Rows taken from a queue's head leave index entries until VACUUM; the default (20% of the
    table) would let them pile up for hours on a large table."""
    with scratch_postgres_database("autovacuum") as url:
        migrations.upgrade(url)

        async def options() -> dict[str, list[str]]:
            engine = create_async_engine(url)
            query = text(
                "SELECT relname, reloptions FROM pg_class WHERE relname IN "
                "('routing_work_items', 'routing_offers', 'kernel_outbox', 'kernel_timers')"
            )
            try:
                async with engine.connect() as conn:
                    return {row[0]: row[1] for row in await conn.execute(query)}
            finally:
                await engine.dispose()

        found = asyncio.run(options())
        assert set(found) == {
            "routing_work_items",
            "routing_offers",
            "kernel_outbox",
            "kernel_timers",
        }
        for settings in found.values():
            assert "autovacuum_vacuum_scale_factor=0.0" in settings
            assert "autovacuum_vacuum_threshold=1000" in settings
        migrations.downgrade(url, "0003")
        assert all(value is None for value in asyncio.run(options()).values())
