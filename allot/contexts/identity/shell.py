"""How identity plugs into the app: the authenticator (bearer token or session cookie), the
request middlewares, the values every page gets, navigation, and sending browsers that are not
signed in to the sign-in page.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from starlette.middleware import Middleware
from starlette.responses import RedirectResponse, Response

from allot.kernel.auth import Principal
from allot.kernel.context import current_request_id
from allot.kernel.errors import Unauthorized
from allot.kernel.i18n import N_, locale_var
from allot.kernel.ratelimit_redis import login_limiter
from allot.kernel.redis import app_client
from allot.kernel.web.api_limit import api_rate_limit
from allot.kernel.web.csrf import csrf_token
from allot.kernel.web.flash import FlashReader
from allot.kernel.web.nav import NavItem, nav_items, register_nav
from allot.kernel.web.problems import handle_allot_error, wants_html
from allot.kernel.web.shell import ShellMiddleware
from allot.kernel.web.templating import is_htmx

from .permissions import USERS_MANAGE
from .sessions import SESSION_COOKIE, principal_for_session
from .tokens import principal_for_token

LOGIN_PATH = "/login"

# The kernel's problem titles, marked here so the catalogs carry them and the generic error page
# (`_(problem.title)`) shows them in the reader's language.
PROBLEM_TITLES = (
    N_("Bad request"),
    N_("Invalid pagination cursor"),
    N_("The request did not pass validation"),
    N_("Authentication required"),
    N_("You are not allowed to do this"),
    N_("Not found"),
    N_("Conflict with the current state"),
    N_("Idempotency-Key reused"),
    N_("Request body too large"),
    N_("Unsupported media type"),
    N_("Too many attempts"),
    N_("Too many requests"),
    N_("Method not allowed"),
    N_("Not acceptable"),
    N_("HTTP error"),
    N_("Malformed JSON"),
    N_("Internal error"),
    N_("Security token missing or invalid"),
    N_("Wrong e-mail or password"),
)


async def authenticate(request: Request) -> Principal | None:
    """A bearer token when the request has an Authorization header (and then only that: a bad
    token is not rescued by a cookie), else the session cookie."""
    database = request.app.state.database
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return None
        return await principal_for_token(database, credentials.strip())
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return await principal_for_session(database, cookie)
    return None


def visible_nav(principal: Principal | None) -> list[NavItem]:
    if principal is None:
        return []
    return [i for i in nav_items() if i.permission is None or principal.has(i.permission)]


def template_values(request: Request) -> dict[str, Any]:
    principal: Principal | None = getattr(request.state, "principal", None)
    return {
        "principal": principal,
        "csrf_token": csrf_token(request),
        "nav": visible_nav(principal),
        "flashes": FlashReader(request),
        "locale": locale_var.get(),
        "request_id": current_request_id(),
    }


def sign_in_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"{LOGIN_PATH}?next={quote(target, safe='')}"


async def redirect_to_sign_in(request: Request, exc: Exception) -> Response:
    """Pages answer "not signed in" with a trip to the sign-in form and back; APIs with 401."""
    if request.method in ("GET", "HEAD") and wants_html(request):
        return RedirectResponse(sign_in_url(request), status_code=303)
    if is_htmx(request):
        return Response(status_code=401, headers={"HX-Redirect": sign_in_url(request)})
    return await handle_allot_error(request, exc)


def install_web(app: FastAPI) -> None:
    settings = app.state.settings
    app.state.authenticator = authenticate
    redis = app_client(app)  # None without redis_url: the in-memory limiters serve
    app.state.login_limiter = login_limiter(settings, redis)
    app.state.template_processors.append(template_values)
    app.add_exception_handler(Unauthorized, redirect_to_sign_in)
    # Innermost, so the request id and body limit apply first; one layer does, in order:
    # who is calling -> which language -> is the form genuine -> flash cookie bookkeeping.
    app.user_middleware.append(Middleware(ShellMiddleware, default_locale=settings.default_locale))
    # Inside the shell, which has resolved the caller the API limit is counted for.
    app.user_middleware.append(api_rate_limit(settings, redis))
    register_nav(NavItem(key="home", label=N_("Home"), href="/", order=0))
    register_nav(
        NavItem(
            key="users", label=N_("Users"), href="/admin/users", permission=USERS_MANAGE, order=800
        )
    )
    register_nav(
        NavItem(
            key="teams", label=N_("Teams"), href="/admin/teams", permission=USERS_MANAGE, order=810
        )
    )
