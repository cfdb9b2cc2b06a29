"""CSRF protection: every unsafe request that a browser could send on its own (anything riding on
a cookie, and every HTML form, the login form included) must carry a token that only our pages
know, in the form field `csrf_token` or the header `X-CSRF-Token` (htmx sends it, see app.js).

The token is an HMAC of a *binding* under the app's secret key:
- signed in with a session cookie: the session id, so the token dies with the session;
- anonymous (the login form): a random nonce kept in an HttpOnly `allot_csrf` cookie, set the
  first time a page asks for a token. A cross-site attacker can neither read that cookie nor
  compute the HMAC, so a forged form post cannot carry a matching pair.

Exempt: safe methods, requests with `Authorization: Bearer` (a header no other site can make a
browser send), and anonymous API calls (no ambient credentials to abuse; they get their 401).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message, Receive, Send

from allot.kernel.auth import optional_principal
from allot.kernel.errors import Forbidden, PayloadTooLarge
from allot.kernel.web.problems import problem_response

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
NONCE_COOKIE = "allot_csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
FORM_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_NONCE_SHAPE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


class CsrfFailed(Forbidden):
    code, title = "csrf-failed", "Security token missing or invalid"


def _secret(request: Request) -> bytes:
    return str(request.app.state.secret_key).encode()


def sign(secret: bytes, binding: str) -> str:
    digest = hmac.new(secret, b"allot-csrf\x00" + binding.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def token_matches(secret: bytes, binding: str, token: str) -> bool:
    return hmac.compare_digest(sign(secret, binding), token)


def secure_cookies(request: Request) -> bool:
    """Whether cookies get the Secure flag: as configured, else when the request was HTTPS."""
    configured: bool | None = request.app.state.settings.session_cookie_secure
    return configured if configured is not None else request.url.scheme == "https"


def _binding(request: Request) -> str | None:
    principal = getattr(request.state, "principal", None)
    if principal is not None and principal.via == "session" and principal.session_id:
        return f"session:{principal.session_id}"
    nonce = request.cookies.get(NONCE_COOKIE) or getattr(request.state, "csrf_nonce", None)
    if nonce and _NONCE_SHAPE.match(nonce):
        return f"anon:{nonce}"
    return None


def csrf_token(request: Request) -> str:
    """The token a page embeds in its forms (and in <meta name="csrf-token"> for htmx)."""
    binding = _binding(request)
    if binding is None:
        nonce = secrets.token_urlsafe(24)
        request.state.csrf_nonce = nonce  # the shell middleware sends it as the cookie
        binding = f"anon:{nonce}"
    return sign(_secret(request), binding)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the already-read body to the app, then defers to the real one."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _submitted_token(request: Request, receive: Receive) -> tuple[str | None, Receive]:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header, receive
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in FORM_CONTENT_TYPES:
        return None, receive
    body = await request.body()
    try:
        form = await request.form()
    except HTTPException:  # a malformed multipart body has no token we could trust
        return None, _replaying(body, receive)
    value = form.get(CSRF_FIELD)
    await form.close()
    return (value if isinstance(value, str) else None), _replaying(body, receive)


async def must_check(request: Request) -> bool:
    """Whether an unsafe request needs a token (see the module docstring for the exemptions)."""
    authorization = request.headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        return False
    principal = await optional_principal(request)
    return principal is not None or not request.url.path.startswith("/api/")


async def check(request: Request, receive: Receive, send: Send) -> Receive | None:
    """Checks an unsafe request's token. Returns the receive the app must read the body from
    (a form's body was read here and is replayed), or None when the request was answered here
    (refused with 403, a body over the limit with 413, or the client went away)."""
    try:
        submitted, receive = await _submitted_token(request, receive)
    except ClientDisconnect:
        return None
    except PayloadTooLarge as exc:
        await _reject(request, exc.to_problem(instance=request.url.path), send)
        return None
    binding = _binding(request)
    if not (submitted and binding and token_matches(_secret(request), binding, submitted)):
        failure = CsrfFailed(detail="Reload the page and submit the form again")
        await _reject(request, failure.to_problem(instance=request.url.path), send)
        return None
    return receive


async def _reject(request: Request, problem: dict[str, Any], send: Send) -> None:
    response = problem_response(request, problem)

    async def no_body() -> Message:
        return {"type": "http.disconnect"}

    await response(request.scope, no_body, send)


def nonce_cookie(request: Request) -> str | None:
    """The Set-Cookie value for the anonymous nonce a page made during this request, if any."""
    nonce = request.scope.get("state", {}).get("csrf_nonce")
    if not nonce:
        return None
    cookie = f"{NONCE_COOKIE}={nonce}; Path=/; HttpOnly; SameSite=Lax"
    if secure_cookies(request):
        cookie += "; Secure"
    return cookie
