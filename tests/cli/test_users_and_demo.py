"""`allot users`, `allot tokens` and `allot demo` through identity's public interface."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from allot.app import create_app
from allot.cli.demo import ADMIN_EMAIL, DEMO_PASSWORD, TEAMS, USERS
from allot.cli.demo_history import SEED_LEADS
from allot.kernel.config import Settings
from tests.cli.conftest import Invoke


def test_users_need_a_migrated_database(cli: Invoke) -> None:
    result = cli("users", "create", "--email", "a@example.com", "--role", "admin",
                 "--password", "long-enough-password")  # fmt: skip
    assert result.exit_code == 1
    assert "run `allot migrate` first" in result.output


def _audit_actors(url: str) -> set[tuple[str, str]]:
    async def read() -> set[tuple[str, str]]:
        engine = create_async_engine(url)
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT actor_kind, actor_label FROM audit_entries"))
            found = {(kind, label) for kind, label in rows}
        await engine.dispose()
        return found

    return asyncio.run(read())


def test_create_list_and_deactivate_users(cli: Invoke, sqlite_url: str) -> None:
    assert cli("migrate").exit_code == 0

    result = cli("users", "create", "--email", "Olga@Example.com", "--role", "manager",
                 "--role", "analyst", "--name", "Ольга Иванова",
                 "--password", "long-enough-password")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Created user olga@example.com (analyst, manager)" in result.output

    duplicate = cli("users", "create", "--email", "olga@example.com", "--role", "admin",
                    "--password", "long-enough-password")  # fmt: skip
    assert duplicate.exit_code == 1
    assert duplicate.output.startswith("error:")
    assert len(duplicate.output.strip().splitlines()) == 1
    assert "Traceback" not in duplicate.output

    assert ("system", "cli") in _audit_actors(sqlite_url)

    listing = cli("users", "list").output
    assert "olga@example.com" in listing
    assert "Ольга Иванова" in listing

    result = cli("users", "deactivate", "--email", "olga@example.com")
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in cli("users", "list").stdout.splitlines()]
    assert rows[0] == ["email", "name", "roles", "active", "id"]
    olga = next(row for row in rows if row[0] == "olga@example.com")
    assert olga[1:4] == ["Ольга Иванова", "analyst, manager", "no"]


def test_password_is_prompted_when_not_given(cli: Invoke) -> None:
    assert cli("migrate").exit_code == 0
    result = cli("users", "create", "--email", "p@example.com", "--role", "operator",
                 input="long-enough-password\nlong-enough-password\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "long-enough-password" not in result.output


def _me(tmp_path: Path, token: str) -> httpx.Response:
    settings = Settings(data_dir=tmp_path / "var", environment="test",
                        run_background_workers=False)  # fmt: skip

    async def call() -> httpx.Response:
        app = create_app(settings, run_background=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await http.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        await app.state.database.dispose()
        return response

    return asyncio.run(call())


def test_token_is_printed_alone_on_the_last_line_and_works(cli: Invoke, tmp_path: Path) -> None:
    assert cli("migrate").exit_code == 0
    assert cli("users", "create", "--email", "bot@example.com", "--role", "admin",
               "--password", "long-enough-password").exit_code == 0  # fmt: skip

    result = cli("tokens", "create", "--email", "bot@example.com", "--name", "import script")

    assert result.exit_code == 0, result.output
    token = result.stdout.splitlines()[-1]
    assert token
    assert " " not in token
    me = _me(tmp_path, token)
    assert me.status_code == 200, me.text
    assert me.json()["email"] == "bot@example.com"

    token_id = result.stdout.split("Token ", 1)[1].split(" ", 1)[0]
    assert cli("tokens", "revoke", "--id", token_id).exit_code == 0
    assert _me(tmp_path, token).status_code == 401


def test_token_for_an_unknown_user_is_a_one_line_error(cli: Invoke) -> None:
    assert cli("migrate").exit_code == 0
    result = cli("tokens", "create", "--email", "nobody@example.com")
    assert result.exit_code == 1
    assert result.output.strip() == "error: no user with email nobody@example.com"


def test_demo_loads_the_team_once_and_prints_how_to_sign_in(cli: Invoke) -> None:
    first = cli("demo", "--no-serve")
    assert first.exit_code == 0, first.output
    assert f"{ADMIN_EMAIL}" in first.output
    assert DEMO_PASSWORD in first.output
    assert "http://127.0.0.1:8000/login" in first.output
    loaded = re.search(r"Demo data loaded: (\d+) new records", first.output)
    assert loaded is not None, first.output
    # users and teams, plus the floor: queue, agents and seeded leads
    assert int(loaded.group(1)) >= len(USERS) + len(TEAMS) + len(SEED_LEADS) + 1

    again = cli("demo", "--no-serve")
    assert again.exit_code == 0, again.output
    assert "Demo data already present" in again.output

    listing = cli("users", "list").output
    for person in USERS:
        assert person.email in listing
    assert "Анна Смирнова" in listing

    reset = cli("demo", "--no-serve", "--reset")
    assert reset.exit_code == 0, reset.output
    assert "new records" in reset.output
