"""In a real browser: sign in as admin, add a user with a role, switch the UI to Russian."""

from __future__ import annotations

import re

import pytest

from .conftest import CHROMIUM_ARGS

pytestmark = pytest.mark.ui


def test_admin_signs_in_adds_a_user_and_switches_to_russian(live_server, chromium_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_path), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.set_default_timeout(10_000)

            # Signed out, the home page sends us to the sign-in form and back.
            page.goto(f"{live_server.url}/")
            expect(page).to_have_url(re.compile(r"/login\?next=%2F$"))
            page.get_by_label("E-mail").fill(live_server.admin_email)
            page.get_by_label("Password").fill(live_server.admin_password)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", name="Welcome, Admin!")).to_be_visible()

            # Add a user with the manager role on the admin page.
            page.get_by_role("navigation", name="Main navigation").get_by_role(
                "link", name="Users"
            ).click()
            expect(page.get_by_role("heading", name="Users")).to_be_visible()
            page.get_by_role("button", name="Add user").click()  # a link styled as a button
            page.get_by_label("E-mail").fill("maria@example.com")
            page.get_by_label("Name", exact=True).fill("Maria Ivanova")
            page.get_by_label("Password").fill("a long enough password")
            page.get_by_label("Operator").uncheck()
            page.get_by_label("Manager").check()
            page.get_by_role("button", name="Add user").click()
            expect(page.get_by_role("status")).to_contain_text("maria@example.com created")
            row = page.get_by_role("row", name=re.compile("Maria Ivanova"))
            expect(row).to_contain_text("Manager")

            # Switch the interface to Russian: the same page, now in Russian, and it sticks.
            page.get_by_role("button", name="RU").click()
            expect(page.get_by_role("heading", name="Пользователи")).to_be_visible()
            expect(page.get_by_role("button", name="Добавить пользователя")).to_be_visible()
            page.reload()
            expect(page.locator("html")).to_have_attribute("lang", "ru")
            expect(page.get_by_role("row", name=re.compile("Maria Ivanova"))).to_contain_text(
                "Руководитель"
            )

            # The change is in the audit log: who made it, what, and on which object.
            page.goto(f"{live_server.url}/audit?action=identity.user.created")
            expect(page.get_by_role("heading", name="Журнал аудита")).to_be_visible()
            entry = page.get_by_role("row", name=re.compile("identity.user.created")).first
            expect(entry).to_contain_text(live_server.admin_email)
            entry.get_by_role("link").click()
            expect(page.locator("main")).to_contain_text("maria@example.com")
        finally:
            browser.close()
