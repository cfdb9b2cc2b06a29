"""Shared test factories: plain functions with sensible defaults. Other contexts' tests use them,
so their signatures stay stable."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from typing import Any

import httpx

from allot.contexts import identity
from allot.contexts.identity import UserInfo
from allot.kernel.db import Database

DEFAULT_PASSWORD = "correct horse battery staple"
_sequence = itertools.count(1)
_CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}{next(_sequence)}@example.com"


async def make_user(
    session: Any,
    *,
    email: str | None = None,
    roles: Iterable[str] = ("operator",),
    password: str | None = DEFAULT_PASSWORD,
    display_name: str | None = None,
    locale: str = "ru",
) -> UserInfo:
    """A user, created through identity's public interface. `session` is an AsyncSession or a
    `Database` (then a transaction of its own is committed)."""
    if isinstance(session, Database):
        async with session.transaction() as own:
            return await make_user(
                own,
                email=email,
                roles=roles,
                password=password,
                display_name=display_name,
                locale=locale,
            )
    return await identity.create_user(
        session,
        email=email or unique_email(),
        password=password,
        roles=roles,
        display_name=display_name,
        locale=locale,
    )


async def csrf_token(client: httpx.AsyncClient, path: str = "/login") -> str:
    """The CSRF token a page hands this client (its cookies are kept by the client)."""
    page = await client.get(path, headers={"Accept": "text/html"})
    match = _CSRF_INPUT.search(page.text)
    assert match, f"no CSRF token on {path} ({page.status_code})"
    return match.group(1)


async def login(
    client: httpx.AsyncClient, email: str, password: str = DEFAULT_PASSWORD
) -> httpx.Response:
    """Sign in through the real login form; the client keeps the session cookie."""
    token = await csrf_token(client, "/login")
    return await client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": token, "next": "/"},
        headers={"Accept": "text/html"},
    )


async def auth_headers(
    session: Any, user: UserInfo, *, scopes: Iterable[str] | None = None
) -> dict[str, str]:
    """`Authorization: Bearer` headers for a fresh API token of `user`. Given a `Database`, the
    token is committed at once; given a session, it is usable once the caller commits."""
    if isinstance(session, Database):
        async with session.transaction() as own:
            return await auth_headers(own, user, scopes=scopes)
    _token_id, plaintext = await identity.issue_token(
        session, user_id=user.id, name="test", scopes=scopes
    )
    return {"Authorization": f"Bearer {plaintext}"}
