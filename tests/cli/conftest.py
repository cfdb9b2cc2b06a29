"""Run the `allot` command in-process against a throwaway data directory."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog
from click.testing import Result
from typer.testing import CliRunner

from allot.cli.main import app
from allot.kernel.config import get_settings

Invoke = Callable[..., Result]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Invoke]:
    """`cli("migrate", "current")` runs `allot migrate current`; the database is an SQLite file
    in tmp_path unless ALLOT_DATABASE_URL is set with monkeypatch."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in list(os.environ):
        if name.startswith("ALLOT_") and not name.startswith("ALLOT_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ALLOT_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("ALLOT_ENVIRONMENT", "test")
    # Commands configure logging for the terminal; put the test process's back afterwards.
    structlog_config = structlog.get_config().copy()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        get_settings.cache_clear()  # settings are read from the environment per command
        return runner.invoke(app, list(args), input=input, catch_exceptions=False)

    yield invoke
    get_settings.cache_clear()
    structlog.configure(**structlog_config)
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{(tmp_path / 'var' / 'allot.sqlite3').resolve()}"


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file holding the demo data, loaded once per test process by the demo's own
    steps (its recorded history takes seconds to play); `demo_url` hands each test a copy."""
    from allot.cli.demo import load_demo_data
    from allot.cli.migrate import upgrade_to
    from allot.kernel.config import Settings

    directory = tmp_path_factory.mktemp("demo-template")
    path = directory / "allot.sqlite3"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade_to(url)
    asyncio.run(load_demo_data(Settings(database_url=url, data_dir=directory, environment="test")))
    return path


@pytest.fixture
def demo_url(demo_template: Path, sqlite_url: str, tmp_path: Path) -> str:
    """A database holding the demo data, as `allot demo --no-serve` leaves it (a copy of the
    session's template: the WAL was checkpointed when its last connection closed)."""
    target = tmp_path / "var" / "allot.sqlite3"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(demo_template, target)
    return sqlite_url
