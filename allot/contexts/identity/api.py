"""Identity JSON API under /api/v1: users, the caller (`/me`), API tokens and teams.

Object-level rule for users: holders of `users:read` see every account, everyone else only
their own; another user's id answers 404, the same as an id that does not exist.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from allot.kernel.auth import CurrentPrincipal, Principal, require
from allot.kernel.idempotency import IdempotencyKey
from allot.kernel.pagination import Page, PageParams, page_params
from allot.kernel.web.routers import api_router
from allot.kernel.web.uow import ReadSession, WriteSession

from . import service, tokens
from .permissions import TOKENS_MANAGE_OWN, USERS_MANAGE, USERS_READ
from .schemas import (
    MeOut,
    MeUpdate,
    TeamCreate,
    TeamOut,
    TokenCreate,
    TokenIssued,
    TokenOut,
    UserCreate,
    UserOut,
    UserUpdate,
)

Paging = Annotated[PageParams, Depends(page_params)]

users = api_router("/users", "users")
me = api_router("/me", "users")
tokens_router = api_router("/tokens", "tokens")
teams = api_router("/teams", "teams")


# -- users ------------------------------------------------------------------------------------
@users.get("", response_model=Page[UserOut])
async def list_users(
    session: ReadSession,
    paging: Paging,
    _: Annotated[Principal, require(USERS_READ)],
    active: Annotated[bool | None, Query(description="Only active or inactive users")] = None,
) -> Page[UserOut]:
    rows, cursor = await service.list_users(session, paging, active=active)
    return Page[UserOut](items=[UserOut.of(u) for u in rows], next_cursor=cursor)


@users.post("", response_model=UserOut, status_code=201)
async def create_user(
    body: UserCreate,
    session: WriteSession,
    _principal: Annotated[Principal, require(USERS_MANAGE)],
    _idem: IdempotencyKey,
) -> UserOut:
    user = await service.create_user(
        session,
        email=body.email,
        password=body.password,
        roles=body.roles,
        display_name=body.display_name,
        locale=body.locale,
        team_ids=body.team_ids,
    )
    return UserOut.of(user)


@users.get("/{user_id}", response_model=UserOut)
async def get_user(
    user_id: uuid.UUID, session: ReadSession, principal: CurrentPrincipal
) -> UserOut:
    return UserOut.of(await service.visible_user(session, principal, user_id))


@users.patch("/{user_id}", response_model=UserOut)
async def update_user(
    user_id: uuid.UUID,
    body: UserUpdate,
    session: WriteSession,
    principal: Annotated[Principal, require(USERS_MANAGE)],
) -> UserOut:
    user = await service.update_user(
        session, user_id, actor_id=principal.user_id, **body.model_dump(exclude_unset=True)
    )
    return UserOut.of(user)


@users.delete("/{user_id}", status_code=204)
async def delete_user(
    user_id: uuid.UUID,
    session: WriteSession,
    principal: Annotated[Principal, require(USERS_MANAGE)],
) -> Response:
    await service.delete_user(session, user_id, actor_id=principal.user_id)
    return Response(status_code=204)


@users.post("/{user_id}/deactivate", response_model=UserOut)
async def deactivate_user(
    user_id: uuid.UUID,
    session: WriteSession,
    principal: Annotated[Principal, require(USERS_MANAGE)],
) -> UserOut:
    return UserOut.of(await service.deactivate_user(session, user_id, actor_id=principal.user_id))


@users.post("/{user_id}/reactivate", response_model=UserOut)
async def reactivate_user(
    user_id: uuid.UUID,
    session: WriteSession,
    _: Annotated[Principal, require(USERS_MANAGE)],
) -> UserOut:
    return UserOut.of(await service.reactivate_user(session, user_id))


# -- the caller -------------------------------------------------------------------------------
def _me(principal: Principal, user: UserOut) -> MeOut:
    effective = sorted(p for p in principal.permissions if principal.has(p))
    scopes = sorted(principal.token_scopes) if principal.token_scopes is not None else None
    via = "token" if principal.via == "token" else "session"
    return MeOut(**user.model_dump(), permissions=effective, via=via, token_scopes=scopes)


@me.get("", response_model=MeOut)
async def get_me(session: ReadSession, principal: CurrentPrincipal) -> MeOut:
    user = await service.get_user(session, principal.user_id)
    return _me(principal, UserOut.of(user))


@me.patch("", response_model=MeOut)
async def update_me(body: MeUpdate, session: WriteSession, principal: CurrentPrincipal) -> MeOut:
    user = await service.update_user(
        session,
        principal.user_id,
        actor_id=principal.user_id,
        **body.model_dump(exclude_unset=True),
    )
    return _me(principal, UserOut.of(user))


# -- API tokens -------------------------------------------------------------------------------
@tokens_router.get("", response_model=Page[TokenOut])
async def list_tokens(
    session: ReadSession,
    paging: Paging,
    principal: Annotated[Principal, require(TOKENS_MANAGE_OWN)],
) -> Page[TokenOut]:
    rows, cursor = await tokens.list_tokens(session, principal.user_id, paging)
    return Page[TokenOut](items=[TokenOut.of(t) for t in rows], next_cursor=cursor)


@tokens_router.post("", response_model=TokenIssued, status_code=201)
async def issue_token(
    body: TokenCreate,
    session: WriteSession,
    principal: Annotated[Principal, require(TOKENS_MANAGE_OWN)],
) -> TokenIssued:
    token, plaintext = await tokens.issue_token(
        session,
        user_id=principal.user_id,
        name=body.name,
        scopes=body.scopes,
        expires_at=body.expires_at,
        within=principal.token_scopes,
    )
    return TokenIssued(**TokenOut.of(token).model_dump(), token=plaintext)


@tokens_router.delete("/{token_id}", status_code=204)
async def revoke_token(
    token_id: uuid.UUID, session: WriteSession, principal: CurrentPrincipal
) -> Response:
    await tokens.revoke_token(session, principal, token_id)
    return Response(status_code=204)


# -- teams ------------------------------------------------------------------------------------
@teams.get("", response_model=list[TeamOut])
async def list_teams(
    session: ReadSession, _: Annotated[Principal, require(USERS_READ)]
) -> list[TeamOut]:
    return [TeamOut.of(t) for t in await service.list_teams(session)]


@teams.post("", response_model=TeamOut, status_code=201)
async def create_team(
    body: TeamCreate,
    session: WriteSession,
    _: Annotated[Principal, require(USERS_MANAGE)],
) -> TeamOut:
    return TeamOut.of(await service.create_team(session, body.name))


router = APIRouter()
for part in (users, me, tokens_router, teams):
    router.include_router(part)
