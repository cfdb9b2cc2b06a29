"""In a real browser, with the demo's data (Russian, the admin's full navigation) and a few
long names: the leads list and the managers' board fit a 1280×800 laptop screen without
scrolling sideways, tables included, and still do at 1024 px."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from allot.cli.demo import ADMIN_EMAIL, DEMO_PASSWORD, load_demo_data
from allot.contexts import leads
from allot.kernel.config import Settings
from allot.kernel.db import Database

from .conftest import CHROMIUM_ARGS

pytestmark = pytest.mark.ui

PAGES = ("/leads", "/board")
OVERFLOW = """() => {
  const page = document.scrollingElement;
  const boxes = [...document.querySelectorAll("main table")].map((table) => {
    const box = table.closest(".overflow-auto") || table.parentElement;
    return {scroll: box.scrollWidth, client: box.clientWidth};
  });
  return {page: page.scrollWidth, window: window.innerWidth, tables: boxes};
}"""


async def _demo_like_data(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'allot.sqlite3'}"
    settings = Settings(
        environment="test", data_dir=tmp_path, database_url=url,
        secret_key="ui-test-secret-key-not-for-production",  # type: ignore[arg-type]
    )  # fmt: skip
    await load_demo_data(settings)
    database = Database(url)
    try:
        async with database.transaction() as session:
            for name, source in (
                ("Констанция Аполлинарьевна Веллингтон-Задунайская", "partner_bankiros_affiliate"),
                ("Александр Вячеславович Преображенский", "sravni_ru_marketplace_loans"),
            ):
                await leads.create_lead(
                    session,
                    leads.NewLead(
                        source=source, customer_name=name, customer_phone="+7 912 345-67-89",
                        customer_email="konstanciya.apollinarievna@example-company.ru",
                        amount_minor=123_456_789_00, term_months=360, priority=10,
                    ),
                )  # fmt: skip
    finally:
        await database.dispose()


def test_leads_and_board_fit_a_laptop_screen(live_server, chromium_path, tmp_path):
    from playwright.sync_api import sync_playwright

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _demo_like_data(tmp_path)).result()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_path), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(locale="ru-RU", viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.set_default_timeout(10_000)
            page.goto(f"{live_server.url}/login")
            page.locator("input[name=email]").fill(ADMIN_EMAIL)
            page.locator("input[name=password]").fill(DEMO_PASSWORD)
            page.locator("form[action='/login'] button[type=submit]").click()
            page.wait_for_url(f"{live_server.url}/")
            for width in (1280, 1024):
                page.set_viewport_size({"width": width, "height": 800})
                for path in PAGES:
                    page.goto(f"{live_server.url}{path}")
                    page.locator("main table").first.wait_for()
                    page.screenshot(path=str(tmp_path / f"{path.strip('/')}-{width}.png"))
                    sizes = page.evaluate(OVERFLOW)
                    assert sizes["window"] == width
                    assert sizes["page"] <= sizes["window"], (path, width, sizes)
                    for table in sizes["tables"]:  # tables need no sideways scroll either
                        assert table["scroll"] <= table["client"], (path, width, sizes)
        finally:
            browser.close()
