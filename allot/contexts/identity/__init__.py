"""Identity: users, roles and teams, browser sessions, API tokens, and the web shell's sign-in.

The public interface (the only names other contexts and the CLI may use):

- `UserInfo`: a read-only view of a user;
- `create_user`, `get_user`, `get_user_by_email`, `issue_token`;
- `install(app)`: the authenticator, middlewares (auth, locale, CSRF, flash), template values,
  navigation, and the redirect of signed-out browsers to `/login`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel.errors import NotFound

from . import permissions as permissions  # declares users:read, users:manage, tokens:manage_own
from . import repository, service, shell, tokens, validation
from .models import User


@dataclass(frozen=True)
class UserInfo:
    id: uuid.UUID
    email: str
    display_name: str
    roles: frozenset[str]
    is_active: bool
    locale: str
    team_ids: frozenset[uuid.UUID]

    @classmethod
    def of(cls, user: User) -> UserInfo:
        return cls(
            id=user.id,
            email=user.email,
            display_name=user.display_name,
            roles=user.role_names,
            is_active=user.is_active,
            locale=user.locale,
            team_ids=user.team_ids,
        )


async def create_user(
    session: AsyncSession,
    *,
    email: str,
    password: str | None,
    roles: Iterable[str],
    display_name: str | None = None,
    locale: str = "ru",
    team_ids: Iterable[uuid.UUID] = (),
) -> UserInfo:
    """Validates (e-mail, password of 10+ characters, known roles) -> ValidationFailed naming
    the field; an e-mail already registered -> Conflict. Audited; publishes
    identity.user.created."""
    user = await service.create_user(
        session,
        email=email,
        password=password,
        roles=roles,
        display_name=display_name,
        locale=locale,
        team_ids=team_ids,
    )
    return UserInfo.of(user)


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> UserInfo | None:
    user = await repository.get_user(session, user_id)
    return UserInfo.of(user) if user is not None else None


async def get_user_by_email(session: AsyncSession, email: str) -> UserInfo | None:
    user = await repository.get_user_by_email(session, validation.lookup_form(email))
    return UserInfo.of(user) if user is not None else None


async def issue_token(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    name: str,
    scopes: Iterable[str] | None = None,
    expires_at: datetime | None = None,
) -> tuple[uuid.UUID, str]:
    """Returns (token id, plaintext). The plaintext is shown once; only its digest is stored."""
    token, plaintext = await tokens.issue_token(
        session, user_id=user_id, name=name, scopes=scopes, expires_at=expires_at
    )
    return token.id, plaintext


@dataclass(frozen=True)
class TeamInfo:
    id: uuid.UUID
    name: str


async def list_users(session: AsyncSession) -> list[UserInfo]:
    """Every user, inactive included (for the CLI and administrative tools)."""
    return [UserInfo.of(user) for user in await repository.all_users(session)]


async def deactivate_user(session: AsyncSession, user_id: uuid.UUID) -> UserInfo:
    return UserInfo.of(await service.deactivate_user(session, user_id))


async def revoke_token(session: AsyncSession, token_id: uuid.UUID) -> None:
    """Revoke any token by id (administrative path; NotFound if there is none)."""
    token = await repository.get_token(session, token_id)
    if token is None:
        raise NotFound(detail="No such token")
    await tokens.revoke(session, token)


async def list_teams(session: AsyncSession) -> list[TeamInfo]:
    return [TeamInfo(id=team.id, name=team.name) for team in await service.list_teams(session)]


async def create_team(session: AsyncSession, name: str) -> TeamInfo:
    team = await service.create_team(session, name)
    return TeamInfo(id=team.id, name=team.name)


def install(app: Any) -> None:
    shell.install_web(app)


__all__ = [
    "TeamInfo",
    "UserInfo",
    "create_team",
    "create_user",
    "deactivate_user",
    "get_user",
    "get_user_by_email",
    "install",
    "issue_token",
    "list_teams",
    "list_users",
    "revoke_token",
]
