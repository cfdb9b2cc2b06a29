"""Admin pages: users (list, add, edit roles/teams, deactivate, reactivate, delete) and teams.

Every page needs `users:manage`; the use cases are the same service functions the JSON API
calls, so both are audited the same way.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import RedirectResponse, Response

from allot.kernel.auth import ROLES, Principal, require
from allot.kernel.errors import Conflict, ValidationFailed
from allot.kernel.i18n import gettext as _
from allot.kernel.pagination import PageParams
from allot.kernel.web.flash import flash
from allot.kernel.web.routers import view_router
from allot.kernel.web.templating import render
from allot.kernel.web.uow import ReadSession, WriteSession

from . import repository, service
from .forms import UserFormValues, field_errors, form_text, role_labels
from .models import User
from .permissions import USERS_MANAGE

router = view_router("/admin")
Admin = Annotated[Principal, require(USERS_MANAGE)]
PAGE_SIZE = 50
FormErrors = (ValidationFailed, Conflict)


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _team_ids(values: list[str]) -> list[uuid.UUID]:
    ids = []
    for value in values:
        try:
            ids.append(uuid.UUID(value))
        except ValueError as exc:
            raise ValidationFailed.on("body.team_ids", "Unknown team", "unknown_team") from exc
    return ids


async def _user_form(
    request: Request,
    session: AsyncSession,
    *,
    user: User | None,
    values: UserFormValues,
    errors: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    labels = role_labels()
    teams = await service.list_teams(session)
    return render(
        request,
        "identity/user_form.html",
        {
            "user": user,
            "values": values,
            "errors": errors or {},
            "role_options": [(role, labels[role]) for role in ROLES],
            "team_options": [(str(team.id), team.name) for team in teams],
        },
        block="content",
        status_code=status_code,
    )


def _values_of(user: User) -> UserFormValues:
    return UserFormValues(
        email=user.email,
        display_name=user.display_name,
        locale=user.locale,
        roles=sorted(user.role_names),
        team_ids=[str(t) for t in user.team_ids],
    )


# -- users ------------------------------------------------------------------------------------
@router.get("/users")
async def users_page(
    request: Request, session: ReadSession, _admin: Admin, cursor: str | None = None
) -> Response:
    rows, next_cursor = await service.list_users(
        session, PageParams(cursor=cursor, limit=PAGE_SIZE)
    )
    teams = {t.id: t.name for t in await service.list_teams(session)}
    return render(
        request,
        "identity/users.html",
        {"users": rows, "next_cursor": next_cursor, "teams": teams, "role_labels": role_labels()},
        block="content",
    )


@router.get("/users/new")
async def new_user_page(request: Request, session: ReadSession, _admin: Admin) -> Response:
    return await _user_form(request, session, user=None, values=UserFormValues())


@router.post("/users")
async def create_user(request: Request, session: WriteSession, _admin: Admin) -> Response:
    form = await request.form()
    values = UserFormValues.from_form(form)
    try:
        user = await service.create_user(
            session,
            email=values.email,
            password=form_text(form, "password", strip=False),
            roles=values.roles,
            display_name=values.display_name or None,
            locale=values.locale,
            team_ids=_team_ids(values.team_ids),
        )
    except FormErrors as exc:
        await session.rollback()
        return await _user_form(
            request,
            session,
            user=None,
            values=values,
            errors=field_errors(exc),
            status_code=exc.status,
        )
    flash(request, _("User %(email)s created.", email=user.email))
    return _see_other("/admin/users")


@router.get("/users/{user_id}")
async def edit_user_page(
    request: Request, user_id: uuid.UUID, session: ReadSession, _admin: Admin
) -> Response:
    user = await service.get_user(session, user_id)
    return await _user_form(request, session, user=user, values=_values_of(user))


@router.post("/users/{user_id}")
async def update_user(
    request: Request, user_id: uuid.UUID, session: WriteSession, admin: Admin
) -> Response:
    form = await request.form()
    values = UserFormValues.from_form(form)
    password = form_text(form, "password", strip=False)
    try:
        user = await service.update_user(
            session,
            user_id,
            actor_id=admin.user_id,
            email=values.email,
            display_name=values.display_name,
            roles=values.roles,
            team_ids=_team_ids(values.team_ids),
            locale=values.locale,
            password=password or None,
        )
    except FormErrors as exc:
        await session.rollback()
        user = await service.get_user(session, user_id)
        return await _user_form(
            request,
            session,
            user=user,
            values=values,
            errors=field_errors(exc),
            status_code=exc.status,
        )
    flash(request, _("Changes to %(email)s saved.", email=user.email))
    return _see_other(f"/admin/users/{user_id}")


@router.post("/users/{user_id}/deactivate")
async def deactivate_user(
    request: Request, user_id: uuid.UUID, session: WriteSession, admin: Admin
) -> Response:
    return await _lifecycle(request, session, user_id, admin, "deactivate")


@router.post("/users/{user_id}/reactivate")
async def reactivate_user(
    request: Request, user_id: uuid.UUID, session: WriteSession, admin: Admin
) -> Response:
    return await _lifecycle(request, session, user_id, admin, "reactivate")


@router.post("/users/{user_id}/delete")
async def delete_user(
    request: Request, user_id: uuid.UUID, session: WriteSession, admin: Admin
) -> Response:
    return await _lifecycle(request, session, user_id, admin, "delete")


async def _lifecycle(
    request: Request, session: AsyncSession, user_id: uuid.UUID, admin: Principal, action: str
) -> Response:
    user = await service.get_user(session, user_id)
    email = user.email
    try:
        if action == "deactivate":
            await service.deactivate_user(session, user_id, actor_id=admin.user_id)
            flash(request, _("%(email)s is deactivated and signed out.", email=email))
        elif action == "reactivate":
            await service.reactivate_user(session, user_id)
            flash(request, _("%(email)s can sign in again.", email=email))
        else:
            await service.delete_user(session, user_id, actor_id=admin.user_id)
            flash(request, _("%(email)s is deleted.", email=email))
            return _see_other("/admin/users")
    except Conflict as exc:
        flash(request, field_errors(exc).get("__all__", _(exc.title)), "error")
    return _see_other(f"/admin/users/{user_id}")


# -- teams ------------------------------------------------------------------------------------
async def _teams_page(
    request: Request,
    session: AsyncSession,
    *,
    errors: dict[str, Any] | None = None,
    name: str = "",
    status_code: int = 200,
) -> Response:
    teams = await service.list_teams(session)
    counts = await repository.team_member_counts(session)
    return render(
        request,
        "identity/teams.html",
        {"teams": teams, "counts": counts, "errors": errors or {}, "name": name},
        block="content",
        status_code=status_code,
    )


@router.get("/teams")
async def teams_page(request: Request, session: ReadSession, _admin: Admin) -> Response:
    return await _teams_page(request, session)


@router.post("/teams")
async def create_team(request: Request, session: WriteSession, _admin: Admin) -> Response:
    form = await request.form()
    name = form_text(form, "name")
    try:
        team = await service.create_team(session, name)
    except FormErrors as exc:
        await session.rollback()
        return await _teams_page(
            request, session, errors=field_errors(exc), name=name, status_code=exc.status
        )
    flash(request, _("Team %(name)s created.", name=team.name))
    return _see_other("/admin/teams")
