"""All SQL of the identity context. Users always come with roles and team memberships loaded
(selectinload: two extra statements per query, however many users), so nothing lazy-loads."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from allot.kernel.pagination import PageParams, paginate

from .models import ApiToken, BrowserSession, Team, TeamMember, User


def _users() -> Select[User]:
    return select(User).options(selectinload(User.roles), selectinload(User.memberships))


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return (await session.execute(_users().where(User.id == user_id))).scalar_one_or_none()


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    return (await session.execute(_users().where(User.email == email))).scalar_one_or_none()


async def email_taken(
    session: AsyncSession, email: str, *, except_user: uuid.UUID | None = None
) -> bool:
    statement = select(User.id).where(User.email == email)
    if except_user is not None:
        statement = statement.where(User.id != except_user)
    return (await session.execute(statement.limit(1))).first() is not None


async def list_users(
    session: AsyncSession, params: PageParams, *, active: bool | None = None
) -> tuple[Sequence[User], str | None]:
    statement = _users()
    if active is not None:
        statement = statement.where(User.is_active.is_(active))
    return await paginate(session, statement, User.id, params)


async def all_users(session: AsyncSession) -> Sequence[User]:
    return (await session.execute(_users().order_by(User.email))).scalars().all()


async def delete_user(session: AsyncSession, user_id: uuid.UUID) -> None:
    # Children first: the cascade would do it too, but only where the database enforces FKs.
    for model in (BrowserSession, ApiToken, TeamMember):
        await session.execute(delete(model).where(model.user_id == user_id))
    await session.execute(delete(User).where(User.id == user_id))


# -- sessions ---------------------------------------------------------------------------------
async def session_with_user(session: AsyncSession, token_hash: str) -> BrowserSession | None:
    statement = (
        select(BrowserSession)
        .where(BrowserSession.token_hash == token_hash)
        .options(
            selectinload(BrowserSession.user).selectinload(User.roles),
            selectinload(BrowserSession.user).selectinload(User.memberships),
        )
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def delete_session(session: AsyncSession, session_id: uuid.UUID) -> None:
    await session.execute(delete(BrowserSession).where(BrowserSession.id == session_id))


async def delete_sessions_of(session: AsyncSession, user_id: uuid.UUID) -> int:
    result: Any = await session.execute(
        delete(BrowserSession).where(BrowserSession.user_id == user_id)
    )
    return int(result.rowcount)


async def delete_expired_sessions(session: AsyncSession, user_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        delete(BrowserSession).where(
            BrowserSession.user_id == user_id, BrowserSession.expires_at <= now
        )
    )


# -- API tokens -------------------------------------------------------------------------------
async def token_with_user(session: AsyncSession, token_hash: str) -> ApiToken | None:
    statement = (
        select(ApiToken)
        .where(ApiToken.token_hash == token_hash)
        .options(
            selectinload(ApiToken.user).selectinload(User.roles),
            selectinload(ApiToken.user).selectinload(User.memberships),
        )
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def get_token(session: AsyncSession, token_id: uuid.UUID) -> ApiToken | None:
    return await session.get(ApiToken, token_id)


async def list_tokens(
    session: AsyncSession, user_id: uuid.UUID, params: PageParams
) -> tuple[Sequence[ApiToken], str | None]:
    statement = select(ApiToken).where(ApiToken.user_id == user_id)
    return await paginate(session, statement, ApiToken.id, params)


async def revoke_tokens_of(session: AsyncSession, user_id: uuid.UUID, now: datetime) -> int:
    result: Any = await session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(result.rowcount)


async def touch_token(
    session: AsyncSession, token_id: uuid.UUID, now: datetime, stale_before: datetime
) -> None:
    """Record use, but at most once per interval: a busy token must not write on every call."""
    await session.execute(
        update(ApiToken)
        .where(
            ApiToken.id == token_id,
            or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < stale_before),
        )
        .values(last_used_at=now)
    )


# -- teams ------------------------------------------------------------------------------------
async def list_teams(session: AsyncSession) -> Sequence[Team]:
    return (await session.execute(select(Team).order_by(Team.name))).scalars().all()


async def teams_by_ids(session: AsyncSession, team_ids: Iterable[uuid.UUID]) -> Sequence[Team]:
    ids = list(team_ids)
    if not ids:
        return []
    return (await session.execute(select(Team).where(Team.id.in_(ids)))).scalars().all()


async def team_name_taken(session: AsyncSession, name: str) -> bool:
    statement = select(Team.id).where(func.lower(Team.name) == name.lower()).limit(1)
    return (await session.execute(statement)).first() is not None


async def team_member_counts(session: AsyncSession) -> dict[uuid.UUID, int]:
    statement = select(TeamMember.team_id, func.count()).group_by(TeamMember.team_id)
    return {team_id: int(count) for team_id, count in (await session.execute(statement)).all()}
