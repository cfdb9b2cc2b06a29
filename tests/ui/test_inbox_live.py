"""In a real browser: an operator keeps the inbox open; work submitted meanwhile appears as an
offer without a reload (server-sent events), accepting it moves it to the operator's items, and
the status switch works in place."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from allot.contexts import identity
from allot.contexts.routing import agent_service, queue_service, service
from allot.contexts.routing.schemas import AgentCreate, QueueCreate
from allot.kernel.db import Database

from .conftest import CHROMIUM_ARGS

pytestmark = pytest.mark.ui

OPERATOR_EMAIL = "olga@example.com"
OPERATOR_PASSWORD = "operator password 42"


def _database(tmp_path: Path) -> Database:
    # The live server's SQLite file (the fixture puts it in this test's tmp_path); WAL and a busy
    # timeout let this process write next to the server.
    return Database(f"sqlite+aiosqlite:///{tmp_path / 'allot.sqlite3'}")


async def _an_operator_who_takes_offers(tmp_path: Path) -> None:
    database = _database(tmp_path)
    try:
        async with database.transaction() as session:
            await identity.create_user(
                session,
                email=OPERATOR_EMAIL,
                password=OPERATOR_PASSWORD,
                roles=["operator"],
                display_name="Olga",
                locale="en",
            )
            await queue_service.create_queue(
                session,
                QueueCreate(
                    name="Loans", offer_mode="offer", member_expression='"loans" in skills'
                ),
            )
            await agent_service.create_agent(
                session,
                AgentCreate(
                    name="Olga", email=OPERATOR_EMAIL, skills=["loans"], status="available"
                ),
            )
    finally:
        await database.dispose()


async def _submit(tmp_path: Path, reference: str) -> None:
    database = _database(tmp_path)
    try:
        async with database.transaction() as session:
            await service.submit(session, reference=reference, kind="lead")
    finally:
        await database.dispose()


def _run(work: Coroutine[Any, Any, None]) -> None:
    """Run database work to completion; on its own thread, since Playwright's sync API keeps an
    event loop running on this one."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, work).result()


def test_an_offer_appears_live_and_accepting_moves_it_to_my_items(
    live_server, chromium_path, tmp_path
):
    from playwright.sync_api import expect, sync_playwright

    _run(_an_operator_who_takes_offers(tmp_path))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_path), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(locale="en-US", viewport={"width": 390, "height": 844})
            page = context.new_page()
            page.set_default_timeout(10_000)
            page.goto(f"{live_server.url}/login?next=%2Finbox")
            page.get_by_label("E-mail").fill(OPERATOR_EMAIL)
            page.get_by_label("Password").fill(OPERATOR_PASSWORD)
            # The inbox reports presence as soon as it opens (with the CSRF header).
            with page.expect_response(re.compile(r"/heartbeat$")) as heartbeat:
                page.get_by_role("button", name="Sign in").click()
            assert heartbeat.value.status == 200
            expect(page.get_by_role("heading", name="My inbox")).to_be_visible()
            expect(page.get_by_text("You are shown as Available to managers.")).to_be_visible()
            expect(page.get_by_text("No offers right now.")).to_be_visible()
            page.evaluate("window.__sameDocument = true")  # gone if the page reloads

            reference = f"lead:{uuid.uuid4()}"
            _run(_submit(tmp_path, reference))

            offer = page.get_by_role("row", name=re.compile(re.escape(reference)))
            expect(offer).to_be_visible()
            expect(offer.locator("[data-countdown]")).to_have_text(re.compile(r"^[12]:\d\d$"))
            expect(page.get_by_text("My load: 1 of 5")).to_be_visible()
            assert page.evaluate("window.__sameDocument") is True

            offer.get_by_role("button", name=f"Accept {reference}").click()
            mine = page.get_by_role("list", name="Assigned to me")
            expect(mine.get_by_role("link", name=reference)).to_be_visible()
            expect(page.get_by_text("No offers right now.")).to_be_visible()

            page.get_by_role("button", name="Away", exact=True).click()
            expect(page.get_by_text("You are shown as Away to managers.")).to_be_visible()
            expect(page.get_by_role("button", name="Away", exact=True)).to_have_attribute(
                "aria-pressed", "true"
            )
            assert page.evaluate("window.__sameDocument") is True
        finally:
            browser.close()
