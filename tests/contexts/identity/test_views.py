"""The pages: admin user and team management, the language switch, the account page, error pages
and htmx fragments. Requests look like a browser's (Accept: text/html, forms with CSRF tokens)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from allot.contexts import identity
from allot.contexts.identity.models import Team
from allot.kernel.web.locale import LOCALE_COOKIE
from tests.factories import csrf_token, login, make_user

from .helpers import HTML


@pytest.fixture
async def admin_client(client, database):
    await make_user(database, email="admin@example.com", roles=["admin"], locale="en")
    response = await login(client, "admin@example.com")
    assert response.status_code == 303
    return client


async def submit(client, path, data, *, page=None):
    token = await csrf_token(client, page or path)
    return await client.post(path, data={**data, "csrf_token": token}, headers=HTML)


async def test_admin_adds_a_user_with_a_role(admin_client, database):
    page = await admin_client.get("/admin/users/new", headers=HTML)
    assert page.status_code == 200
    assert 'name="roles" value="manager"' in page.text
    response = await submit(
        admin_client,
        "/admin/users",
        {
            "email": "new.person@example.com",
            "display_name": "New Person",
            "password": "long enough pass",
            "locale": "ru",
            "roles": ["manager", "analyst"],
        },
        page="/admin/users/new",
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/users"
    listing = await admin_client.get("/admin/users", headers=HTML)
    assert "User new.person@example.com created." in listing.text
    assert "New Person" in listing.text
    assert "Analyst, Manager" in listing.text
    async with database.reader() as session:
        created = await identity.get_user_by_email(session, "new.person@example.com")
    assert created is not None
    assert created.roles == frozenset({"manager", "analyst"})


async def test_form_errors_are_shown_next_to_the_field_keeping_the_input(admin_client, database):
    response = await submit(
        admin_client,
        "/admin/users",
        {
            "email": "broken",
            "display_name": "Kept Name",
            "password": "short",
            "roles": ["operator"],
        },
        page="/admin/users/new",
    )
    assert response.status_code == 422
    assert 'aria-invalid="true" aria-describedby="f-email-error"' in response.text
    assert "Enter a valid e-mail address." in response.text
    assert 'value="Kept Name"' in response.text
    await make_user(database, email="taken@example.com")
    duplicate = await submit(
        admin_client,
        "/admin/users",
        {"email": "taken@example.com", "password": "long enough pass", "roles": ["operator"]},
        page="/admin/users/new",
    )
    assert duplicate.status_code == 409
    assert "A user with this e-mail already exists." in duplicate.text


async def test_admin_edits_roles_and_teams_then_deactivates_and_deletes(admin_client, database):
    assert (await submit(admin_client, "/admin/teams", {"name": "Night shift"})).status_code == 303
    async with database.reader() as session:
        team = (await session.execute(select(Team))).scalar_one()
    user = await make_user(database, email="worker@example.com", roles=["operator"])
    path = f"/admin/users/{user.id}"
    response = await submit(
        admin_client,
        path,
        {
            "email": "worker@example.com",
            "display_name": "Worker",
            "locale": "en",
            "roles": ["operator", "analyst"],
            "team_ids": [str(team.id)],
        },
    )
    assert response.status_code == 303
    async with database.reader() as session:
        updated = await identity.get_user(session, user.id)
    assert updated.roles == frozenset({"operator", "analyst"})
    assert updated.team_ids == frozenset({team.id})
    teams_page = await admin_client.get("/admin/teams", headers=HTML)
    assert re.search(r"<td>Night shift</td><td>1</td>", teams_page.text)

    await submit(admin_client, f"{path}/deactivate", {}, page=path)
    page = await admin_client.get(path, headers=HTML)
    assert "This user is deactivated and cannot sign in." in page.text
    await submit(admin_client, f"{path}/reactivate", {}, page=path)
    async with database.reader() as session:
        assert (await identity.get_user(session, user.id)).is_active
    deleted = await submit(admin_client, f"{path}/delete", {}, page=path)
    assert deleted.headers["location"] == "/admin/users"
    async with database.reader() as session:
        assert await identity.get_user(session, user.id) is None


async def test_admin_cannot_deactivate_themselves_from_the_page(admin_client, database):
    async with database.reader() as session:
        me = await identity.get_user_by_email(session, "admin@example.com")
    path = f"/admin/users/{me.id}"
    response = await submit(admin_client, f"{path}/deactivate", {}, page=path)
    assert response.status_code == 303
    page = await admin_client.get(path, headers=HTML)
    assert "You cannot deactivate yourself" in page.text


async def test_operators_get_a_friendly_403_page(client, database):
    await make_user(database, email="op@example.com", roles=["operator"], locale="en")
    await login(client, "op@example.com")
    response = await client.get("/admin/users", headers=HTML)
    assert response.status_code == 403
    assert "text/html" in response.headers["content-type"]
    assert "You do not have permission to open this page." in response.text
    # And the navigation does not offer what they cannot open.
    home = await client.get("/", headers=HTML)
    assert 'href="/admin/users"' not in home.text


async def test_unknown_pages_get_a_friendly_404(client):
    response = await client.get("/no/such/page", headers=HTML)
    assert response.status_code == 404
    assert "Page not found" in response.text
    assert '<main id="main"' in response.text


async def test_language_follows_accept_language_then_cookie(client):
    assert "Sign in" in (await client.get("/login", headers=HTML)).text
    default = await client.get("/login", headers={"Accept": "text/html"})
    assert "Войти" in default.text
    assert '<html lang="ru">' in default.text
    switched = await submit(client, "/locale", {"locale": "ru", "next": "/login"}, page="/login")
    assert switched.status_code == 303
    assert switched.headers["location"] == "/login"
    assert client.cookies[LOCALE_COOKIE] == "ru"
    page = await client.get("/login", headers=HTML)  # Accept-Language: en, but the cookie wins
    assert "Войти" in page.text


async def test_signed_in_language_switch_is_stored_on_the_user(admin_client, database):
    assert "Users" in (await admin_client.get("/", headers=HTML)).text
    await submit(admin_client, "/locale", {"locale": "ru", "next": "/admin/users"}, page="/")
    admin_client.cookies.delete(LOCALE_COOKIE)  # the account's choice counts, not the cookie
    page = await admin_client.get("/admin/users", headers=HTML)
    assert "Пользователи" in page.text
    assert "Добавить пользователя" in page.text
    async with database.reader() as session:
        assert (await identity.get_user_by_email(session, "admin@example.com")).locale == "ru"


async def test_locale_switch_goes_back_only_within_the_site(client):
    response = await submit(
        client, "/locale", {"locale": "en", "next": "https://evil.example/"}, page="/login"
    )
    assert response.headers["location"] == "/"


async def test_account_page_issues_a_token_shown_once(admin_client):
    response = await submit(admin_client, "/account/tokens", {"name": "Reports"}, page="/account")
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    secret = re.search(r'id="issued-token">(allot_[^<]+)<', response.text).group(1)
    assert (
        await admin_client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    ).status_code == 200
    again = await admin_client.get("/account", headers=HTML)
    assert secret not in again.text
    assert "Reports" in again.text


async def test_profile_update_and_validation(admin_client, database):
    response = await submit(admin_client, "/account", {"display_name": "  ", "locale": "en"})
    assert response.status_code == 422
    assert "Must not be empty." in response.text
    saved = await submit(admin_client, "/account", {"display_name": "Chief", "locale": "en"})
    assert saved.status_code == 303
    async with database.reader() as session:
        assert (
            await identity.get_user_by_email(session, "admin@example.com")
        ).display_name == "Chief"


async def test_htmx_requests_get_only_the_content_block(admin_client):
    response = await admin_client.get("/admin/users", headers={**HTML, "HX-Request": "true"})
    assert response.status_code == 200
    assert "<html" not in response.text
    assert "<table>" in response.text


async def test_the_shell_is_accessible_and_loads_only_local_assets(client):
    page = (await client.get("/login", headers=HTML)).text
    assert '<a class="skip-link" href="#main">' in page
    assert '<main id="main"' in page
    assert "<header" in page
    assert "<nav" in page
    assert '<label for="f-email">' in page
    assert 'id="f-email"' in page
    assert '<meta name="viewport"' in page
    for asset in (
        "/static/vendor/pico/pico.min.css",
        "/static/vendor/htmx/htmx.min.js",
        "/static/vendor/htmx-ext-sse/sse.js",
        "/static/app.css",
        "/static/app.js",
    ):
        assert asset in page
        assert (await client.get(asset)).status_code == 200


async def test_unexpected_errors_get_a_friendly_500_page_in_the_readers_language(app, client):
    async def explode() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/_test/explode", explode)
    response = await client.get("/_test/explode", headers=HTML)
    assert response.status_code == 500
    assert "Something went wrong" in response.text
    assert "boom" not in response.text


async def test_other_errors_use_the_generic_page_in_the_readers_language(client):
    response = await client.get("/logout", headers={"Accept": "text/html"})
    assert response.status_code == 405
    assert "Метод не разрешён" in response.text
