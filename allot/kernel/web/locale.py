"""Which language a request is answered in: the signed-in user's choice, else the `allot_locale`
cookie (anonymous visitors who switched), else Accept-Language, else the configured default.

`LocaleMiddleware` binds the choice to `i18n.locale_var` for exactly one request, so gettext in
templates, services and error pages all agree.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from allot.kernel.auth import optional_principal
from allot.kernel.i18n import LOCALES, locale_var, negotiate

LOCALE_COOKIE = "allot_locale"
LOCALE_COOKIE_MAX_AGE = 365 * 24 * 3600


def choose_locale(
    *,
    user_locale: str | None,
    cookie_locale: str | None,
    accept_language: str | None,
    default: str,
) -> str:
    for candidate in (user_locale, cookie_locale):
        if candidate in LOCALES:
            return candidate
    return negotiate(accept_language, default)


async def request_locale(request: Request, default: str) -> str:
    principal = await optional_principal(request)
    return choose_locale(
        user_locale=principal.locale if principal else None,
        cookie_locale=request.cookies.get(LOCALE_COOKIE),
        accept_language=request.headers.get("accept-language"),
        default=default,
    )


class LocaleMiddleware:
    def __init__(self, app: ASGIApp, default: str = "ru") -> None:
        self.app = app
        self.default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/static/"):
            await self.app(scope, receive, send)
            return
        token = locale_var.set(await request_locale(Request(scope), self.default))
        # Reset only on the way out of a normal response: an unexpected error is turned into the
        # 500 page further out (Starlette's ServerErrorMiddleware), which must still speak the
        # reader's language. Servers run each request in a fresh context, so nothing leaks.
        await self.app(scope, receive, send)
        locale_var.reset(token)
