"""Which language a request is answered in: the signed-in user's choice, else the `allot_locale`
cookie (anonymous visitors who switched), else Accept-Language, else the configured default.

The shell middleware (`kernel/web/shell.py`) binds the choice to `i18n.locale_var` for exactly
one request, so gettext in templates, services and error pages all agree.
"""

from __future__ import annotations

from starlette.requests import Request

from allot.kernel.auth import optional_principal
from allot.kernel.i18n import LOCALES, negotiate

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
    if principal is not None and principal.locale in LOCALES:
        return principal.locale  # what choose_locale answers, without parsing cookies
    return choose_locale(
        user_locale=principal.locale if principal else None,
        cookie_locale=request.cookies.get(LOCALE_COOKIE),
        accept_language=request.headers.get("accept-language"),
        default=default,
    )
