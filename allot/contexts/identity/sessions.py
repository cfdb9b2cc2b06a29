"""Browser sign-in: password check with rate limiting, server-side sessions behind an HttpOnly
cookie, sign-out, and the rules for where to go after signing in.

Sessions expire `session_max_age_seconds` after sign-in (not sliding: a stolen cookie is only
good for a bounded time) and end at once when the user is deactivated or deleted.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from fastapi import Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts import audit
from allot.kernel.auth import Principal
from allot.kernel.clock import utcnow
from allot.kernel.config import Settings
from allot.kernel.context import Actor, bound
from allot.kernel.db import Database
from allot.kernel.errors import RateLimited, Unauthorized
from allot.kernel.ids import new_id
from allot.kernel.ratelimit import RateLimiter
from allot.kernel.web.csrf import secure_cookies

from . import events, passwords, repository, service, validation
from .models import BrowserSession, User
from .tokens import digest, new_secret

SESSION_COOKIE = "allot_session"
SESSION_STARTED = "identity.session.started"
SESSION_ENDED = "identity.session.ended"


class InvalidCredentials(Unauthorized):
    code, title = "invalid-credentials", "Wrong e-mail or password"


def limiter_keys(email: str, client_ip: str | None) -> list[str]:
    keys = [f"login:email:{email.strip().lower()}"]
    if client_ip:
        keys.append(f"login:ip:{client_ip}")
    return keys


async def sign_in(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    client_ip: str | None,
    limiter: RateLimiter,
    settings: Settings,
) -> tuple[User, str]:
    """Check the password and open a session; returns the user and the cookie value.

    Failed attempts count per e-mail and per client IP in a sliding window; once either is
    full, even the right password is refused until the window moves on."""
    keys = limiter_keys(email, client_ip)
    window = settings.login_window_seconds
    waits = [
        await limiter.retry_after(
            key, limit=settings.login_attempts_per_window, window_seconds=window
        )
        for key in keys
    ]
    blocked = [wait for wait in waits if wait is not None]
    if blocked:
        raise RateLimited(
            detail="Too many sign-in attempts; try again later",
            extra={"retry_after": max(blocked)},
        )
    user = await repository.get_user_by_email(session, validation.lookup_form(email))
    usable = user is not None and user.is_active
    verification = await passwords.verify(user.password_hash if usable and user else None, password)
    if not verification.ok or user is None:
        for key in keys:
            await limiter.hit(key, window_seconds=window)
        raise InvalidCredentials(detail="Wrong e-mail or password")
    await limiter.reset(keys[0])
    if verification.new_hash is not None:
        user.password_hash = verification.new_hash
    now = utcnow()
    user.last_login_at = now
    await repository.delete_expired_sessions(session, user.id, now)
    cookie_value = new_secret()
    browser_session = BrowserSession(
        id=new_id(),
        user_id=user.id,
        token_hash=digest(cookie_value),
        created_at=now,
        expires_at=now + timedelta(seconds=settings.session_max_age_seconds),
    )
    session.add(browser_session)
    await session.flush()
    with bound(actor=Actor(kind="user", id=user.id, label=user.email)):
        await audit.record(
            session,
            action=SESSION_STARTED,
            object_type=events.USER_AGGREGATE,
            object_id=user.id,
            after={"session_id": str(browser_session.id)},
        )
    return user, cookie_value


async def sign_out(session: AsyncSession, principal: Principal) -> None:
    if principal.session_id is None:
        return
    await repository.delete_session(session, principal.session_id)
    await audit.record(
        session,
        action=SESSION_ENDED,
        object_type=events.USER_AGGREGATE,
        object_id=principal.user_id,
        before={"session_id": str(principal.session_id)},
        after={},
    )


async def principal_for_session(database: Database, cookie_value: str) -> Principal | None:
    async with database.reader() as session:
        row = await repository.session_with_user(session, digest(cookie_value))
        if row is None or row.expires_at <= utcnow() or not row.user.is_active:
            return None
        return service.principal_for(row.user, via="session", session_id=row.id)


def set_session_cookie(request: Request, response: Response, value: str, max_age: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=secure_cookies(request)
    )


def safe_next(target: str | None, default: str = "/") -> str:
    """Only a path on this site: never another host, scheme, or a `//host` / `/\\host` trick."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    if any(ord(char) < 32 or char == "\\" for char in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target
