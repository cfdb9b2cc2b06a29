"""`allot migrate` and `allot serve`: the schema gets to head before anything is served."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from allot.cli.runtime import CliError
from allot.cli.serve import prepare_schema
from allot.kernel import migrations
from tests.architecture.boundaries import REPO_ROOT
from tests.cli.conftest import Invoke
from tests.local_servers import free_port
from tests.test_migrations import scratch_postgres_database


def test_migrate_upgrades_reports_and_downgrades(cli: Invoke, sqlite_url: str) -> None:
    head = migrations.head()

    result = cli("migrate", "current")
    assert result.exit_code == 0, result.output
    assert "none (empty database)" in result.output

    result = cli("migrate")
    assert result.exit_code == 0, result.output
    assert f"upgraded from empty to {head}" in result.output
    assert migrations.current(sqlite_url) == head

    assert "nothing to do" in cli("migrate", "upgrade").output
    assert "Up to date." in cli("migrate", "current").output
    history = cli("migrate", "history").output
    assert head is not None
    assert head in history
    assert "← database" in history

    result = cli("migrate", "downgrade", "base")
    assert result.exit_code == 0, result.output
    assert f"downgraded from {head} to base" in result.output
    assert migrations.status(sqlite_url).is_empty


def test_downgrade_needs_a_target_revision(cli: Invoke) -> None:
    result = cli("migrate", "downgrade")
    assert result.exit_code == 2
    assert "Missing argument" in result.output


def test_serve_refuses_a_postgres_schema_behind_unless_told_to_migrate(
    cli: Invoke, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with scratch_postgres_database("cli_serve") as url:
        monkeypatch.setenv("ALLOT_DATABASE_URL", url)
        result = cli("serve", "--port", "1")
        assert result.exit_code == 1
        assert "needs" in result.output
        assert "allot serve --migrate" in result.output
        assert "Traceback" not in result.output
        assert migrations.current(url) is None

        prepare_schema(url, migrate_postgres=True)
        assert migrations.current(url) == migrations.head()
        assert "Database schema created at revision" in capsys.readouterr().out


def test_serve_refuses_a_database_migrated_by_a_newer_version(sqlite_url: str) -> None:
    migrations.upgrade(sqlite_url)

    async def stamp_unknown_revision() -> None:
        engine = create_async_engine(sqlite_url)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        await engine.dispose()

    asyncio.run(stamp_unknown_revision())
    with pytest.raises(CliError, match="9999, which this version of Allot does not know"):
        prepare_schema(sqlite_url, migrate_postgres=False)


def test_serve_creates_the_sqlite_schema_then_answers_http(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLOT_")}
    env.update(
        ALLOT_DATA_DIR=str(tmp_path / "var"),
        ALLOT_ENVIRONMENT="test",
        PYTHONPATH=str(REPO_ROOT),
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "allot", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()[0]
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "allot serve did not answer within 60 s"
                time.sleep(0.2)
        assert response.status_code == 200
        assert response.json()["checks"]["database"] == "ok"
    finally:
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=30)[0]
    assert f"Database schema created at revision {migrations.head()}." in output
    assert server.returncode == 0, output


def test_python_dash_m_allot_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "allot", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for command in ("serve", "migrate", "users", "tokens", "demo", "check"):
        assert command in result.stdout


def test_serve_refuses_several_workers_on_sqlite(cli: Invoke) -> None:
    result = cli("serve", "--workers", "2", "--port", "1")
    assert result.exit_code != 0
    assert "--workers needs PostgreSQL" in result.output
