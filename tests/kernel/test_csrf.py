"""CSRF protection on the real app: forms and cookie-authenticated calls need a token bound to
the session (or, before sign-in, to the browser's nonce cookie); bearer calls are exempt."""

from __future__ import annotations

import re

import httpx

from allot.kernel.web.csrf import NONCE_COOKIE, sign, token_matches
from tests.factories import DEFAULT_PASSWORD, auth_headers, csrf_token, login, make_user

HTML = {"Accept": "text/html", "Accept-Language": "en"}
META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def test_tokens_are_bound_to_secret_and_binding():
    token = sign(b"secret", "session:1")
    assert token_matches(b"secret", "session:1", token)
    assert not token_matches(b"secret", "session:2", token)
    assert not token_matches(b"other", "session:1", token)
    assert not token_matches(b"secret", "session:1", token[:-1] + "A")


async def test_a_form_post_without_a_token_is_a_403_problem(client, database):
    await make_user(database, email="ann@example.com")
    await client.get("/login", headers=HTML)  # has the nonce cookie, but sends no token
    data = {"email": "ann@example.com", "password": DEFAULT_PASSWORD}
    response = await client.post("/login", data=data)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == "urn:allot:problem:csrf-failed"
    page = await client.post("/login", data=data, headers=HTML)
    assert page.status_code == 403
    assert "The form has expired or did not come from this site." in page.text


async def test_the_login_form_with_its_token_passes(client, database):
    await make_user(database, email="ann@example.com")
    assert (await login(client, "ann@example.com")).status_code == 303


async def test_a_token_from_another_browser_is_rejected(app, client, database):
    await make_user(database, email="ann@example.com")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as attacker:
        stolen = await csrf_token(attacker)
    await client.get("/login", headers=HTML)
    assert client.cookies.get(NONCE_COOKIE)
    response = await client.post(
        "/login",
        data={"email": "ann@example.com", "password": DEFAULT_PASSWORD, "csrf_token": stolen},
    )
    assert response.status_code == 403


async def test_a_forged_post_without_any_cookie_is_rejected(client):
    response = await client.post("/locale", data={"locale": "en", "csrf_token": "x" * 43})
    assert response.status_code == 403


async def test_cookie_authenticated_api_calls_need_the_header(client, database):
    await make_user(database, email="ann@example.com")
    await login(client, "ann@example.com")
    refused = await client.patch("/api/v1/me", json={"locale": "en"})
    assert refused.status_code == 403
    assert refused.json()["type"] == "urn:allot:problem:csrf-failed"
    token = META.search((await client.get("/", headers=HTML)).text).group(1)
    accepted = await client.patch(
        "/api/v1/me", json={"locale": "en"}, headers={"X-CSRF-Token": token}
    )
    assert accepted.status_code == 200
    # Safe methods never need it.
    assert (await client.get("/api/v1/me")).status_code == 200


async def test_a_token_dies_with_its_session(client, database):
    await make_user(database, email="ann@example.com")
    await login(client, "ann@example.com")
    old = await csrf_token(client, "/")
    await client.post("/logout", data={"csrf_token": old})
    await login(client, "ann@example.com")
    response = await client.post("/logout", data={"csrf_token": old})
    assert response.status_code == 403


async def test_bearer_calls_are_exempt(client, database):
    user = await make_user(database)
    headers = await auth_headers(database, user)
    response = await client.patch("/api/v1/me", json={"locale": "en"}, headers=headers)
    assert response.status_code == 200


async def test_multipart_forms_carry_the_token_too(client, database):
    await make_user(database, email="ann@example.com")
    token = await csrf_token(client)
    response = await client.post(
        "/login",
        files={
            "email": (None, "ann@example.com"),
            "password": (None, DEFAULT_PASSWORD),
            "csrf_token": (None, token),
        },
    )
    assert response.status_code == 303


async def test_oversized_form_bodies_are_refused(client):
    token = await csrf_token(client)
    response = await client.post("/login", data={"csrf_token": token, "email": "x" * 2_000_000})
    assert response.status_code == 413
