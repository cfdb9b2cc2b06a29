"""`allot check`: configuration with secrets masked; non-zero when the database is unreachable."""

from __future__ import annotations

import pytest

from tests.cli.conftest import Invoke


def test_check_reports_a_reachable_database_and_masks_secrets(
    cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLOT_SECRET_KEY", "do-not-print-this-key")
    monkeypatch.setenv("ALLOT_REDIS_URL", "redis://:redis-password@127.0.0.1:1/0")
    assert cli("migrate").exit_code == 0

    result = cli("check")

    assert result.exit_code == 0, result.output
    assert "database reachable (sqlite)" in result.output
    assert "schema at the newest revision" in result.output
    assert "set (hidden)" in result.output
    assert "do-not-print-this-key" not in result.output
    assert "redis-password" not in result.output
    assert "Redis configured but unreachable at 127.0.0.1:1" in result.output


def test_check_fails_when_the_database_is_unreachable(
    cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLOT_DATABASE_URL", "postgresql://allot:db-secret@127.0.0.1:1/allot")

    result = cli("check")

    assert result.exit_code == 1
    assert "database unreachable" in result.output
    assert "db-secret" not in result.output
    assert "postgresql://allot:***@127.0.0.1:1/allot" in result.output


def test_invalid_settings_are_one_line_naming_the_variable(
    cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLOT_DATABASE_POOL_SIZE", "many")

    result = cli("check")

    assert result.exit_code == 1
    assert result.output.startswith("error: invalid configuration: ALLOT_DATABASE_POOL_SIZE:")
    assert "Traceback" not in result.output
