"""In a real browser: the rule editor's dry run answers in place (htmx, no reload) for the text as
typed, and never saves it."""

from __future__ import annotations

import asyncio
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from allot.contexts.routing import agent_service, queue_service
from allot.contexts.routing.models import RuleSet
from allot.contexts.routing.schemas import AgentCreate, QueueCreate
from allot.kernel.db import Database

from .conftest import CHROMIUM_ARGS

pytestmark = pytest.mark.ui

RULES = {
    "filters": [
        {"name": "big", "when": "amount_minor >= 50000000", "queue": "Senior",
         "steps": [{"after_seconds": 60, "notify": ["manager"]}]},
        {"name": "rest", "queue": "General"},
    ]
}  # fmt: skip


async def _queues_and_agents(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'allot.sqlite3'}")
    try:
        async with database.transaction() as session:
            for name, skill in (("General", "loans"), ("Senior", "senior")):
                body = QueueCreate(name=name, member_expression=f'"{skill}" in skills')
                await queue_service.create_queue(session, body)
            await agent_service.create_agent(
                session, AgentCreate(name="Anna", skills=["loans"], status="available")
            )
            await agent_service.create_agent(
                session, AgentCreate(name="Boris", skills=["senior"], status="offline")
            )
    finally:
        await database.dispose()


async def _saved_versions(tmp_path: Path) -> int:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'allot.sqlite3'}")
    try:
        async with database.reader() as session:
            return int(await session.scalar(select(func.count()).select_from(RuleSet)) or 0)
    finally:
        await database.dispose()


def _run(work):  # Playwright's sync API keeps an event loop on this thread
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work).result()


def test_the_dry_run_answers_in_place_for_the_text_as_typed(live_server, chromium_path, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    _run(_queues_and_agents(tmp_path))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_path), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(10_000)
            page.goto(f"{live_server.url}/login?next=%2Frouting%2Frules%2Fnew")
            page.get_by_label("E-mail").fill(live_server.admin_email)
            page.get_by_label("Password").fill(live_server.admin_password)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", name="New rules version")).to_be_visible()
            page.evaluate("window.__sameDocument = true")  # gone if the page reloads

            page.get_by_label("Rules (JSON)").fill(json.dumps(RULES, indent=2))
            page.get_by_label("…or an item described by its attributes (JSON)").fill(
                '{"amount_minor": 90000000}'
            )
            page.get_by_role("button", name="Try the rules").click()
            result = page.locator("#dry-run-result")
            expect(result).to_contain_text("Queue «Senior»")
            expect(result).to_contain_text("Nobody can take it now.")
            expect(result).to_contain_text("Left out: Boris — offline.")
            expect(result).to_contain_text("after 1 min: notify the manager")

            # Enter in an input tries the rules too (and never saves a version).
            page.get_by_label("…or an item described by its attributes (JSON)").fill("{}")
            page.get_by_label("A lead").press("Enter")
            expect(result).to_contain_text("Anna would get it now.")
            assert page.evaluate("window.__sameDocument") is True
            if os.environ.get("ALLOT_UI_SCREENSHOTS"):
                page.screenshot(path=os.environ["ALLOT_UI_SCREENSHOTS"], full_page=True)
        finally:
            browser.close()
    assert _run(_saved_versions(tmp_path)) == 0
