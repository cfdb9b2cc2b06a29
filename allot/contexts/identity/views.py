"""Identity pages: sign in/out, the home page, the language switch and the user's own account
(profile and API tokens). The admin pages live in `admin_views` and are included here."""

from __future__ import annotations

import math
import uuid
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import RedirectResponse, Response

from allot.kernel.auth import CurrentPrincipal, Principal, optional_principal
from allot.kernel.errors import Conflict, RateLimited, ValidationFailed
from allot.kernel.i18n import LOCALES
from allot.kernel.i18n import gettext as _
from allot.kernel.pagination import PageParams
from allot.kernel.web.csrf import secure_cookies
from allot.kernel.web.flash import flash
from allot.kernel.web.locale import LOCALE_COOKIE, LOCALE_COOKIE_MAX_AGE
from allot.kernel.web.problems import wants_html
from allot.kernel.web.routers import view_router
from allot.kernel.web.templating import render
from allot.kernel.web.uow import ReadSession, WriteSession

from . import admin_views, service, sessions, tokens
from .forms import field_errors, form_text, role_labels
from .permissions import TOKENS_MANAGE_OWN

router = view_router()
OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# -- signing in and out -----------------------------------------------------------------------
@router.get("/login")
async def login_page(request: Request, principal: OptionalPrincipal, next: str = "") -> Response:
    if principal is not None:
        return _see_other(sessions.safe_next(next))
    return render(
        request,
        "identity/login.html",
        {"next": sessions.safe_next(next, ""), "email": ""},
        block="content",
    )


@router.post("/login")
async def login(request: Request, session: WriteSession) -> Response:
    form = await request.form()
    email, password = form_text(form, "email"), form_text(form, "password", strip=False)
    next_url = sessions.safe_next(form_text(form, "next"))
    values = {"next": next_url, "email": email}
    try:
        _user, cookie = await sessions.sign_in(
            session,
            email=email,
            password=password,
            client_ip=request.client.host if request.client else None,
            limiter=request.app.state.login_limiter,
            settings=request.app.state.settings,
        )
    except RateLimited as exc:
        if not wants_html(request):
            raise
        retry_after = int(exc.extra["retry_after"])
        message = _(
            "Too many sign-in attempts. Please wait %(minutes)s min and try again.",
            minutes=math.ceil(retry_after / 60),
        )
        return render(
            request,
            "identity/login.html",
            {**values, "error": message},
            status_code=429,
            headers={"Retry-After": str(retry_after)},
        )
    except sessions.InvalidCredentials:
        if not wants_html(request):
            raise
        return render(
            request,
            "identity/login.html",
            {**values, "error": _("Wrong e-mail or password.")},
            status_code=401,
        )
    response = _see_other(next_url)
    max_age = request.app.state.settings.session_max_age_seconds
    sessions.set_session_cookie(request, response, cookie, max_age)
    return response


@router.post("/logout")
async def logout(request: Request, session: WriteSession, principal: OptionalPrincipal) -> Response:
    if principal is not None:
        await sessions.sign_out(session, principal)
    flash(request, _("You have signed out."), "info")
    response = _see_other("/login")
    sessions.clear_session_cookie(request, response)
    return response


# -- language ---------------------------------------------------------------------------------
@router.post("/locale")
async def switch_locale(
    request: Request, session: WriteSession, principal: OptionalPrincipal
) -> Response:
    form = await request.form()
    locale = form_text(form, "locale")
    if locale not in LOCALES:
        raise ValidationFailed.on("form.locale", f"One of: {', '.join(LOCALES)}")
    if principal is not None and principal.via == "session":
        await service.update_user(
            session, principal.user_id, actor_id=principal.user_id, locale=locale
        )
    response = _see_other(sessions.safe_next(form_text(form, "next")))
    response.set_cookie(
        LOCALE_COOKIE,
        locale,
        max_age=LOCALE_COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
    )
    return response


# -- home and account -------------------------------------------------------------------------
@router.get("/")
async def home(request: Request, session: ReadSession, principal: CurrentPrincipal) -> Response:
    user = await service.get_user(session, principal.user_id)
    labels = role_labels()
    roles = [labels.get(role, role) for role in sorted(principal.roles)]
    return render(
        request,
        "identity/home.html",
        {"roles": roles, "display_name": user.display_name},
        block="content",
    )


async def _account_page(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    *,
    issued: str | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    user = await service.get_user(session, principal.user_id)
    token_rows: list[Any] = []
    if principal.has(TOKENS_MANAGE_OWN):
        token_rows = list((await tokens.list_tokens(session, user.id, PageParams(limit=100)))[0])
    return render(
        request,
        "identity/account.html",
        {
            "user": user,
            "tokens": token_rows,
            "issued": issued,
            "errors": errors or {},
            "can_manage_tokens": principal.has(TOKENS_MANAGE_OWN),
        },
        block="content",
        status_code=status_code,
        # A page holding a fresh token secret must not linger in caches or the back button.
        headers={"Cache-Control": "no-store"} if issued else None,
    )


@router.get("/account")
async def account(request: Request, session: ReadSession, principal: CurrentPrincipal) -> Response:
    return await _account_page(request, session, principal)


@router.post("/account")
async def update_account(
    request: Request, session: WriteSession, principal: CurrentPrincipal
) -> Response:
    form = await request.form()
    try:
        await service.update_user(
            session,
            principal.user_id,
            actor_id=principal.user_id,
            display_name=form_text(form, "display_name"),
            locale=form_text(form, "locale") or None,
        )
    except (ValidationFailed, Conflict) as exc:
        await session.rollback()  # returning a page commits: drop any half-applied change
        return await _account_page(
            request, session, principal, errors=field_errors(exc), status_code=exc.status
        )
    flash(request, _("Your profile is saved."))
    return _see_other("/account")


@router.post("/account/tokens")
async def create_token(
    request: Request, session: WriteSession, principal: CurrentPrincipal
) -> Response:
    if not principal.has(TOKENS_MANAGE_OWN):
        return await _account_page(request, session, principal, status_code=403)
    form = await request.form()
    try:
        _token, plaintext = await tokens.issue_token(
            session,
            user_id=principal.user_id,
            name=form_text(form, "name"),
            within=principal.token_scopes,
        )
    except ValidationFailed as exc:
        await session.rollback()
        return await _account_page(
            request, session, principal, errors=field_errors(exc), status_code=exc.status
        )
    # Shown on this response only: the secret must not travel in a cookie or a URL.
    return await _account_page(request, session, principal, issued=plaintext, status_code=201)


@router.post("/account/tokens/{token_id}/revoke")
async def revoke_token(
    request: Request, token_id: uuid.UUID, session: WriteSession, principal: CurrentPrincipal
) -> Response:
    token = await tokens.revoke_token(session, principal, token_id)
    flash(request, _("Token “%(name)s” revoked.", name=token.name))
    return _see_other("/account")


router.include_router(admin_views.router)
