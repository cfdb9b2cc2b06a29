"""A real Allot server (uvicorn, SQLite file) and Debian's Chromium for the browser smoke tests.

Without Chromium the tests are skipped with a loud reason, except under CI=true, where a missing
browser fails the run instead of silently testing nothing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from allot.contexts import identity
from allot.kernel.db import Base, Database
from tests.local_servers import free_port

CHROMIUM = Path(os.environ.get("ALLOT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class LiveServer:
    url: str
    admin_email: str
    admin_password: str


async def _prepare_database(url: str) -> None:
    database = Database(url)
    try:
        async with database.write_engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        async with database.transaction() as session:
            await identity.create_user(
                session,
                email=ADMIN_EMAIL,
                password=ADMIN_PASSWORD,
                roles=["admin"],
                display_name="Admin",
                locale="en",
            )
    finally:
        await database.dispose()


@pytest.fixture
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        reason = (
            f"!!! Chromium not found at {CHROMIUM}: browser UI tests SKIPPED. "
            "Install it with `apt-get install -y chromium` (CI=true makes this a failure)."
        )
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'allot.sqlite3'}"
    asyncio.run(_prepare_database(database_url))
    port = free_port()
    env = {
        **os.environ,
        "ALLOT_DATABASE_URL": database_url,
        "ALLOT_DATA_DIR": str(tmp_path),
        "ALLOT_SECRET_KEY": "ui-test-secret-key-not-for-production",
        "ALLOT_ENVIRONMENT": "test",
        "ALLOT_LOG_LEVEL": "WARNING",
    }
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "allot.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("the server did not start:\n" + (tmp_path / "server.log").read_text())
            time.sleep(0.1)
        yield LiveServer(url=url, admin_email=ADMIN_EMAIL, admin_password=ADMIN_PASSWORD)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
