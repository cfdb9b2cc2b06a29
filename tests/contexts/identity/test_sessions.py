"""Browser sign-in: the session cookie, failures, rate limiting and expiry (by moving the clock),
sign-out, deactivation ending sessions, and where the browser goes afterwards."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from allot.contexts.identity.models import BrowserSession
from allot.contexts.identity.sessions import SESSION_COOKIE, safe_next
from allot.contexts.identity.tokens import digest
from tests.factories import DEFAULT_PASSWORD, auth_headers, csrf_token, login, make_user

from .helpers import HTML, audit_entries


async def sessions_in_db(database):
    async with database.reader() as session:
        return list((await session.execute(select(BrowserSession))).scalars())


async def post_login(client, email, password, *, accept="text/html", next_url="/"):
    token = await csrf_token(client)
    return await client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": token, "next": next_url},
        headers={"Accept": accept, "Accept-Language": "en"},
    )


async def test_login_sets_a_hardened_cookie_and_stores_only_its_digest(client, database, clock):
    user = await make_user(database, email="ann@example.com")
    response = await login(client, "ANN@example.com", DEFAULT_PASSWORD)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cookie = next(
        h for h in response.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE)
    )
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie
    value = client.cookies[SESSION_COOKIE]
    (row,) = await sessions_in_db(database)
    assert row.user_id == user.id
    assert row.token_hash == digest(value) != value
    page = await client.get("/", headers=HTML)
    assert page.status_code == 200
    assert "ann" in page.text
    actions = [e.action for e in await audit_entries(database, user.id)]
    assert "identity.session.started" in actions


async def test_cookies_are_secure_over_https_or_when_configured(app, database, settings):
    import httpx

    await make_user(database, email="sec@example.com")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as https:
        response = await login(https, "sec@example.com")
    assert "Secure" in response.headers["set-cookie"]
    settings.session_cookie_secure = True
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        page = await http.get("/login", headers=HTML)
    assert "Secure" in page.headers["set-cookie"]  # the CSRF nonce cookie, same rule


@pytest.mark.parametrize("email", ["ann@example.com", "nobody@example.com", "not an email"])
async def test_wrong_credentials_show_the_form_again_without_a_session(client, database, email):
    await make_user(database, email="ann@example.com")
    response = await post_login(client, email, "wrong password!!")
    assert response.status_code == 401
    assert "Wrong e-mail or password." in response.text
    assert SESSION_COOKIE not in client.cookies
    assert await sessions_in_db(database) == []


async def test_a_deactivated_user_cannot_sign_in(client, database):
    admin = await make_user(database, roles=["admin"])
    user = await make_user(database, email="left@example.com")
    await client.post(
        f"/api/v1/users/{user.id}/deactivate", headers=await auth_headers(database, admin)
    )
    response = await post_login(client, "left@example.com", DEFAULT_PASSWORD)
    assert response.status_code == 401


async def test_api_clients_get_a_problem_for_wrong_credentials(client, database):
    response = await post_login(
        client, "x@example.com", "wrong password", accept="application/json"
    )
    assert response.status_code == 401
    assert response.json()["type"] == "urn:allot:problem:invalid-credentials"


async def test_failed_attempts_per_email_are_rate_limited_in_a_sliding_window(
    client, database, clock, settings
):
    await make_user(database, email="ann@example.com")
    for _ in range(settings.login_attempts_per_window):
        assert (await post_login(client, "ann@example.com", "wrong password")).status_code == 401
        clock.advance(10)
    # Now even the right password is refused, with a friendly page and Retry-After.
    blocked = await post_login(client, "ann@example.com", DEFAULT_PASSWORD)
    assert blocked.status_code == 429
    assert "Too many sign-in attempts" in blocked.text
    retry_after = int(blocked.headers["Retry-After"])
    assert 0 < retry_after <= settings.login_window_seconds
    problem = await post_login(client, "ann@example.com", DEFAULT_PASSWORD, accept="*/*")
    assert problem.status_code == 429
    assert problem.json()["type"] == "urn:allot:problem:rate-limited"
    assert problem.headers["Retry-After"] == str(retry_after)
    # The oldest failure leaves the window after Retry-After seconds: one attempt is free again.
    clock.advance(retry_after)
    assert (await post_login(client, "ann@example.com", DEFAULT_PASSWORD)).status_code == 303


async def test_failures_from_one_ip_across_emails_are_limited(client, database, clock, settings):
    await make_user(database, email="target@example.com")
    for n in range(settings.login_attempts_per_window):
        await post_login(client, f"guess{n}@example.com", "wrong password")
    response = await post_login(client, "target@example.com", DEFAULT_PASSWORD)
    assert response.status_code == 429
    clock.advance(settings.login_window_seconds)
    assert (await post_login(client, "target@example.com", DEFAULT_PASSWORD)).status_code == 303


async def test_session_expires_after_max_age(client, database, clock, settings):
    await make_user(database, email="ann@example.com")
    await login(client, "ann@example.com")
    clock.advance(settings.session_max_age_seconds - 1)
    assert (await client.get("/api/v1/me")).status_code == 200
    clock.advance(1)
    assert (await client.get("/api/v1/me")).status_code == 401
    page = await client.get("/", headers=HTML)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2F"


async def test_sign_out_ends_the_session_and_says_so(client, database):
    await make_user(database, email="ann@example.com", locale="en")
    await login(client, "ann@example.com")
    token = await csrf_token(client, "/")
    response = await client.post("/logout", data={"csrf_token": token}, headers=HTML)
    assert response.status_code == 303
    assert await sessions_in_db(database) == []
    assert SESSION_COOKIE not in client.cookies
    page = await client.get("/login", headers=HTML)
    assert "You have signed out." in page.text
    # Shown once only.
    assert "You have signed out." not in (await client.get("/login", headers=HTML)).text


async def test_deactivation_ends_the_users_sessions(client, database, app):
    import httpx

    admin = await make_user(database, roles=["admin"])
    user = await make_user(database, email="ann@example.com")
    await login(client, "ann@example.com")
    assert (await client.get("/api/v1/me")).status_code == 200
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
        response = await other.post(
            f"/api/v1/users/{user.id}/deactivate", headers=await auth_headers(database, admin)
        )
    assert response.status_code == 200
    assert (await client.get("/api/v1/me")).status_code == 401
    assert await sessions_in_db(database) == []


async def test_pages_send_signed_out_browsers_to_login_and_back(client, database):
    response = await client.get("/admin/users?cursor=abc", headers=HTML)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fadmin%2Fusers%3Fcursor%3Dabc"
    await make_user(database, email="boss@example.com", roles=["admin"])
    token = await csrf_token(client)
    back = await client.post(
        "/login",
        data={
            "email": "boss@example.com",
            "password": DEFAULT_PASSWORD,
            "csrf_token": token,
            "next": "/admin/users",
        },
        headers=HTML,
    )
    assert back.headers["location"] == "/admin/users"
    # Signed in, /login itself forwards on.
    again = await client.get("/login?next=/admin/teams", headers=HTML)
    assert (again.status_code, again.headers["location"]) == (303, "/admin/teams")


async def test_htmx_requests_are_told_to_redirect(client):
    response = await client.get("/", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == "/login?next=%2F"


async def test_next_never_leaves_the_site(client, database):
    await make_user(database, email="ann@example.com")
    response = await post_login(
        client, "ann@example.com", DEFAULT_PASSWORD, next_url="https://evil.example/phish"
    )
    assert response.headers["location"] == "/"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/admin/users?cursor=x", "/admin/users?cursor=x"),
        ("/", "/"),
        ("", "/"),
        (None, "/"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example/", "/"),
        ("\\\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/ok\r\nSet-Cookie: x=1", "/"),
        ("evil.example", "/"),
    ],
)
def test_safe_next(target, expected):
    assert safe_next(target) == expected
