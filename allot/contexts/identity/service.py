"""User and team use cases: validate, change state, write the audit row and the outbox event in
the caller's transaction. Never commits.

Input rules live in `validation`; errors name the API field (`body.email`) in both the JSON API
and the admin forms.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts import audit
from allot.kernel.auth import Principal, permissions_for_roles
from allot.kernel.clock import utcnow
from allot.kernel.errors import Conflict, FieldError, NotFound, ValidationFailed
from allot.kernel.events import publish
from allot.kernel.i18n import N_
from allot.kernel.ids import new_id
from allot.kernel.pagination import PageParams

from . import events, passwords, principal_cache, repository
from .models import Team, TeamMember, User, UserRole
from .permissions import USERS_READ
from .validation import (
    check_locale,
    check_password,
    check_roles,
    clean_display_name,
    normalize_email,
)

PERSONAL_FIELDS = ("email", "display_name")
TEAM_NAME_MAX_LENGTH = 200


# -- validation against stored data ---------------------------------------------------------
async def _check_teams(
    session: AsyncSession, team_ids: Iterable[uuid.UUID], field: str = "body.team_ids"
) -> frozenset[uuid.UUID]:
    wanted = frozenset(team_ids)
    found = {team.id for team in await repository.teams_by_ids(session, wanted)}
    missing = sorted(str(t) for t in wanted - found)
    if missing:
        raise ValidationFailed.on(field, f"Unknown teams: {', '.join(missing)}", "unknown_team")
    return wanted


def snapshot(user: User) -> dict[str, Any]:
    """What the audit trail records about a user: never the password hash."""
    return {
        "email": user.email,
        "display_name": user.display_name,
        "roles": sorted(user.role_names),
        "team_ids": sorted(str(t) for t in user.team_ids),
        "is_active": user.is_active,
        "locale": user.locale,
    }


def principal_for(
    user: User,
    *,
    via: str,
    session_id: uuid.UUID | None = None,
    token_scopes: Iterable[str] | None = None,
) -> Principal:
    roles = user.role_names
    return Principal(
        user_id=user.id,
        label=user.email,
        roles=roles,
        permissions=permissions_for_roles(roles),
        team_ids=user.team_ids,
        locale=user.locale,
        via=via,
        token_scopes=frozenset(token_scopes) if token_scopes is not None else None,
        session_id=session_id,
    )


# -- reading ----------------------------------------------------------------------------------
async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await repository.get_user(session, user_id)
    if user is None:
        raise NotFound(detail="No such user")
    return user


async def visible_user(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> User:
    """Object-level rule: user readers see anyone; everyone else only themselves. Others' ids
    answer 404, exactly like ids that do not exist, so probing cannot reveal who has an account."""
    if user_id != principal.user_id and not principal.has(USERS_READ):
        raise NotFound(detail="No such user")
    return await get_user(session, user_id)


async def list_users(
    session: AsyncSession, params: PageParams, *, active: bool | None = None
) -> tuple[Sequence[User], str | None]:
    return await repository.list_users(session, params, active=active)


# -- changing ---------------------------------------------------------------------------------
async def create_user(
    session: AsyncSession,
    *,
    email: str,
    password: str | None,
    roles: Iterable[str],
    display_name: str | None = None,
    locale: str = "ru",
    team_ids: Iterable[uuid.UUID] = (),
) -> User:
    normalized = normalize_email(email)
    role_set = check_roles(roles)
    check_locale(locale)
    if password is not None:
        check_password(password)
    name = clean_display_name(display_name) if display_name else normalized.split("@")[0]
    teams = await _check_teams(session, team_ids)
    if await repository.email_taken(session, normalized):
        raise _duplicate_email()
    user = User(
        id=new_id(),
        email=normalized,
        display_name=name,
        password_hash=await passwords.hash_password(password) if password is not None else None,
        locale=locale,
        is_active=True,
    )
    user.roles = [UserRole(role=role) for role in sorted(role_set)]
    user.memberships = [TeamMember(team_id=team_id) for team_id in sorted(teams)]
    session.add(user)
    await session.flush()
    await audit.record(
        session,
        action=events.USER_CREATED,
        object_type=events.USER_AGGREGATE,
        object_id=user.id,
        before=None,
        after=snapshot(user),
        personal_fields=PERSONAL_FIELDS,
    )
    await publish(
        session,
        type=events.USER_CREATED,
        aggregate_type=events.USER_AGGREGATE,
        aggregate_id=user.id,
        payload=_facts(user),
    )
    return user


async def update_user(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    actor_id: uuid.UUID | None = None,
    email: str | None = None,
    display_name: str | None = None,
    roles: Iterable[str] | None = None,
    team_ids: Iterable[uuid.UUID] | None = None,
    locale: str | None = None,
    password: str | None = None,
) -> User:
    """Change what is given (None leaves a field alone). `actor_id` guards against admins
    locking themselves out."""
    user = await get_user(session, user_id)
    before = snapshot(user)
    if email is not None:
        normalized = normalize_email(email)
        if normalized != user.email:
            if await repository.email_taken(session, normalized, except_user=user.id):
                raise _duplicate_email()
            user.email = normalized
    if display_name is not None:
        user.display_name = clean_display_name(display_name)
    if roles is not None:
        wanted = check_roles(roles)
        if actor_id == user.id and "admin" in user.role_names and "admin" not in wanted:
            raise Conflict(detail=N_("You cannot take the admin role away from yourself"))
        _sync_roles(user, wanted)
    if team_ids is not None:
        _sync_teams(user, await _check_teams(session, team_ids))
    if locale is not None:
        user.locale = check_locale(locale)
    if password is not None:
        check_password(password)
        user.password_hash = await passwords.hash_password(password)
        if actor_id != user.id:  # a reset by someone else signs the user out everywhere
            await repository.delete_sessions_of(session, user.id)
    after = snapshot(user)
    changed = [key for key in after if after[key] != before[key]]
    if password is not None:
        changed.append("password")
        after["credentials_changed"] = True
    if not changed:
        return user
    await session.flush()
    await audit.record(
        session,
        action=events.USER_UPDATED,
        object_type=events.USER_AGGREGATE,
        object_id=user.id,
        before=before,
        after=after,
        personal_fields=PERSONAL_FIELDS,
    )
    principal_cache.forget_on_commit(session)  # roles, teams or locale may have changed
    await publish(
        session,
        type=events.USER_UPDATED,
        aggregate_type=events.USER_AGGREGATE,
        aggregate_id=user.id,
        payload={**_facts(user), "changed": changed},
    )
    return user


async def deactivate_user(
    session: AsyncSession, user_id: uuid.UUID, *, actor_id: uuid.UUID | None = None
) -> User:
    """Deactivated users cannot sign in; their sessions end and their tokens are revoked now."""
    if actor_id == user_id:
        raise Conflict(detail=N_("You cannot deactivate yourself"))
    user = await get_user(session, user_id)
    if not user.is_active:
        return user
    before = snapshot(user)
    now = utcnow()
    user.is_active = False
    user.deactivated_at = now
    await repository.delete_sessions_of(session, user.id)
    await repository.revoke_tokens_of(session, user.id, now)
    await session.flush()
    await _record_change(session, user, events.USER_DEACTIVATED, before)
    return user


async def reactivate_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await get_user(session, user_id)
    if user.is_active:
        return user
    before = snapshot(user)
    user.is_active = True
    user.deactivated_at = None
    await session.flush()
    await _record_change(session, user, events.USER_REACTIVATED, before)
    return user


async def delete_user(
    session: AsyncSession, user_id: uuid.UUID, *, actor_id: uuid.UUID | None = None
) -> None:
    """Erasure (152-FZ / GDPR): the row, its roles, teams, sessions and tokens go; the audit
    trail keeps its entries but with this person's data replaced by pseudonyms."""
    if actor_id == user_id:
        raise Conflict(detail=N_("You cannot delete yourself"))
    user = await get_user(session, user_id)
    await audit.record(
        session,
        action=events.USER_DELETED,
        object_type=events.USER_AGGREGATE,
        object_id=user.id,
        before=snapshot(user),
        after={"deleted": True},
        personal_fields=PERSONAL_FIELDS,
    )
    await publish(
        session,
        type=events.USER_DELETED,
        aggregate_type=events.USER_AGGREGATE,
        aggregate_id=user.id,
        payload={"user_id": str(user.id)},
    )
    principal_cache.forget_on_commit(session)
    session.expunge(user)
    await repository.delete_user(session, user_id)
    await session.flush()
    await audit.pseudonymise_subject(session, object_type=events.USER_AGGREGATE, object_id=user_id)


# -- teams ------------------------------------------------------------------------------------
async def list_teams(session: AsyncSession) -> Sequence[Team]:
    return await repository.list_teams(session)


async def create_team(session: AsyncSession, name: str) -> Team:
    cleaned = " ".join(name.split())
    if not cleaned or len(cleaned) > TEAM_NAME_MAX_LENGTH:
        raise ValidationFailed.on("body.name", f"1 to {TEAM_NAME_MAX_LENGTH} characters")
    if await repository.team_name_taken(session, cleaned):
        raise Conflict(
            detail="A team with this name exists",
            errors=[FieldError("body.name", "A team with this name exists", "duplicate")],
        )
    team = Team(id=new_id(), name=cleaned)
    session.add(team)
    await session.flush()
    await audit.record(
        session,
        action=events.TEAM_CREATED,
        object_type=events.TEAM_AGGREGATE,
        object_id=team.id,
        before=None,
        after={"name": team.name},
    )
    await publish(
        session,
        type=events.TEAM_CREATED,
        aggregate_type=events.TEAM_AGGREGATE,
        aggregate_id=team.id,
        payload={"team_id": str(team.id)},
    )
    return team


# -- helpers ----------------------------------------------------------------------------------
def _duplicate_email() -> Conflict:
    return Conflict(
        detail="A user with this e-mail exists",
        errors=[FieldError("body.email", "A user with this e-mail exists", "duplicate")],
    )


def _facts(user: User) -> dict[str, Any]:
    return {
        "user_id": str(user.id),
        "roles": sorted(user.role_names),
        "team_ids": sorted(str(t) for t in user.team_ids),
        "is_active": user.is_active,
        "locale": user.locale,
    }


async def _record_change(
    session: AsyncSession, user: User, event_type: str, before: dict[str, Any]
) -> None:
    principal_cache.forget_on_commit(session)
    await audit.record(
        session,
        action=event_type,
        object_type=events.USER_AGGREGATE,
        object_id=user.id,
        before=before,
        after=snapshot(user),
        personal_fields=PERSONAL_FIELDS,
    )
    await publish(
        session,
        type=event_type,
        aggregate_type=events.USER_AGGREGATE,
        aggregate_id=user.id,
        payload={"user_id": str(user.id)},
    )


def _sync_roles(user: User, wanted: frozenset[str]) -> None:
    for row in [r for r in user.roles if r.role not in wanted]:
        user.roles.remove(row)
    for role in sorted(wanted - user.role_names):
        user.roles.append(UserRole(role=role))


def _sync_teams(user: User, wanted: frozenset[uuid.UUID]) -> None:
    for row in [m for m in user.memberships if m.team_id not in wanted]:
        user.memberships.remove(row)
    for team_id in sorted(wanted - user.team_ids):
        user.memberships.append(TeamMember(team_id=team_id))
