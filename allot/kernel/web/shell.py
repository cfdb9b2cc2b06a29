"""The shell middleware: who is calling, in which language, whether a form is genuine, and the
flash messages, in one pure ASGI layer inside `RequestContextMiddleware`.

These were four middlewares; every request paid for four layers, four `Request` objects (each
parsing the headers again) and two `send` wrappers. Now one pass does the same steps in the same
order, and an API call with a bearer token does little more than resolve its principal:

1. **Authentication** (not for `ANONYMOUS_PATH_PREFIXES`): resolves the caller before routing, so
   everything after it (locale, CSRF, error pages, navigation) sees the same principal, and binds
   the actor for exactly this request. The actor is reset afterwards: an in-process client
   (tests) runs requests in its own context, and one request's actor must never leak into the
   next.
2. **Locale** (not for `/static/`): binds `i18n.locale_var` (see `locale.py`). It is reset only on
   the way out of a normal response: an unexpected error is turned into the 500 page further
   out, which must still speak the reader's language. Servers run each request in a fresh
   context, so nothing leaks.
3. **CSRF** (see `csrf.py`): an unsafe request that needs a token and lacks a valid one is
   answered here (403, or 413 for a form over the body limit). Any response carries the
   anonymous nonce cookie when a page made one during the request.
4. **Flash messages** (not for `/static/`, see `flash.py`): the incoming cookie is read before the
   endpoint, and the response says what is left. A response given by the CSRF check is not part
   of this bookkeeping (the messages stay for the next page).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from allot.kernel.auth import ANONYMOUS_PATH_PREFIXES, optional_principal
from allot.kernel.context import actor_var
from allot.kernel.i18n import locale_var
from allot.kernel.web import csrf, flash
from allot.kernel.web.locale import request_locale


class ShellMiddleware:
    def __init__(self, app: ASGIApp, default_locale: str = "ru") -> None:
        self.app = app
        self.default_locale = default_locale

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        if scope["path"].startswith(ANONYMOUS_PATH_PREFIXES):
            await self._localised(request, receive, send)
            return
        token = actor_var.set(None)
        try:
            await optional_principal(request)
            await self._localised(request, receive, send)
        finally:
            actor_var.reset(token)

    async def _localised(self, request: Request, receive: Receive, send: Send) -> None:
        if request.scope["path"].startswith("/static/"):
            await self._checked(request, receive, send, static=True)
            return
        token = locale_var.set(await request_locale(request, self.default_locale))
        await self._checked(request, receive, send, static=False)
        locale_var.reset(token)  # not in `finally`: see the module docstring

    async def _checked(self, request: Request, receive: Receive, send: Send, static: bool) -> None:
        scope = request.scope
        flashes: tuple[bytes, str | None] | None = None  # (secret, incoming cookie) once read

        async def shell_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookies = []
                if flashes is not None:
                    cookies.append(flash.outgoing_cookie(request.state, *flashes))
                cookies.append(csrf.nonce_cookie(request))
                if any(cookies):
                    message.setdefault("headers", [])
                    headers = MutableHeaders(scope=message)
                    for cookie in cookies:
                        if cookie:
                            headers.append("set-cookie", cookie)
            await send(message)

        if scope["method"] not in csrf.SAFE_METHODS and await csrf.must_check(request):
            checked = await csrf.check(request, receive, shell_send)
            if checked is None:
                return
            receive = checked
        if not static:
            flashes = flash.read_flashes(request)
        await self.app(scope, receive, shell_send)
