"""API bearer tokens: random, stored as sha256 digests, optionally narrowed to scopes (a subset of
the owner's permissions), expiring, revocable, with `last_used_at` written at most once a minute.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from allot.contexts import audit
from allot.kernel.auth import Principal, permissions_for_roles
from allot.kernel.clock import utcnow
from allot.kernel.db import Database
from allot.kernel.errors import NotFound, ValidationFailed
from allot.kernel.events import publish
from allot.kernel.ids import new_id
from allot.kernel.pagination import PageParams

from . import events, principal_cache, repository, service
from .models import ApiToken
from .permissions import USERS_MANAGE

TOKEN_PREFIX = "allot_"  # noqa: S105 (marks our tokens, e.g. for secret scanners)
NAME_MAX_LENGTH = 100
TOUCH_INTERVAL = timedelta(minutes=1)


def new_secret(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def is_usable(token: ApiToken, now: datetime) -> bool:
    return token.revoked_at is None and (token.expires_at is None or token.expires_at > now)


async def issue_token(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    name: str,
    scopes: Iterable[str] | None = None,
    expires_at: datetime | None = None,
    within: frozenset[str] | None = None,
) -> tuple[ApiToken, str]:
    """A new token for `user_id`; the plaintext is returned once and never stored.

    `within`: the issuer's own token scopes when the issuer is itself a scoped token, so a token
    can never mint a more powerful one."""
    user = await service.get_user(session, user_id)
    cleaned = " ".join(name.split())
    if not cleaned or len(cleaned) > NAME_MAX_LENGTH:
        raise ValidationFailed.on("body.name", f"1 to {NAME_MAX_LENGTH} characters")
    allowed = permissions_for_roles(user.role_names)
    if within is not None:
        allowed &= within
    if scopes is None:
        chosen = None if within is None else sorted(allowed)
    else:
        requested = set(scopes)
        beyond = sorted(requested - allowed)
        if beyond:
            raise ValidationFailed.on(
                "body.scopes", f"Not among your permissions: {', '.join(beyond)}", "not_permitted"
            )
        chosen = sorted(requested)
    now = utcnow()
    if expires_at is not None and expires_at <= now:
        raise ValidationFailed.on("body.expires_at", "Must be in the future", "in_the_past")
    plaintext = new_secret(TOKEN_PREFIX)
    token = ApiToken(
        id=new_id(),
        user_id=user.id,
        name=cleaned,
        token_hash=digest(plaintext),
        prefix=plaintext[:12],
        scopes=chosen,
        created_at=now,
        expires_at=expires_at,
    )
    session.add(token)
    await session.flush()
    facts = {"user_id": str(user.id), "scopes": chosen}
    await audit.record(
        session,
        action=events.TOKEN_ISSUED,
        object_type=events.TOKEN_AGGREGATE,
        object_id=token.id,
        before=None,
        after={**facts, "name": cleaned, "expires_at": expires_at},
    )
    await publish(
        session,
        type=events.TOKEN_ISSUED,
        aggregate_type=events.TOKEN_AGGREGATE,
        aggregate_id=token.id,
        payload={"token_id": str(token.id), **facts},
    )
    return token, plaintext


async def visible_token(
    session: AsyncSession, principal: Principal, token_id: uuid.UUID
) -> ApiToken:
    token = await repository.get_token(session, token_id)
    if token is None or (token.user_id != principal.user_id and not principal.has(USERS_MANAGE)):
        raise NotFound(detail="No such token")
    return token


async def revoke_token(
    session: AsyncSession, principal: Principal, token_id: uuid.UUID
) -> ApiToken:
    return await revoke(session, await visible_token(session, principal, token_id))


async def revoke(session: AsyncSession, token: ApiToken) -> ApiToken:
    """Revoke a token already found and authorised; audited, published, idempotent."""
    if token.revoked_at is not None:
        return token
    token.revoked_at = utcnow()
    await session.flush()
    await audit.record(
        session,
        action=events.TOKEN_REVOKED,
        object_type=events.TOKEN_AGGREGATE,
        object_id=token.id,
        before={"revoked": False},
        after={"revoked": True},
    )
    principal_cache.forget_on_commit(session)
    await publish(
        session,
        type=events.TOKEN_REVOKED,
        aggregate_type=events.TOKEN_AGGREGATE,
        aggregate_id=token.id,
        payload={"token_id": str(token.id), "user_id": str(token.user_id)},
    )
    return token


async def list_tokens(
    session: AsyncSession, user_id: uuid.UUID, params: PageParams
) -> tuple[Sequence[ApiToken], str | None]:
    return await repository.list_tokens(session, user_id, params)


_lookups: dict[str, asyncio.Future[principal_cache.CachedToken | None]] = {}


async def _look_up(
    database: Database, token_digest: str, now: datetime
) -> principal_cache.CachedToken | None:
    async with database.reader() as session:
        token = await repository.token_with_user(session, token_digest)
        if token is None or not is_usable(token, now) or not token.user.is_active:
            return None
        principal = service.principal_for(token.user, via="token", token_scopes=token.scopes)
        cached = principal_cache.CachedToken(
            principal=principal,
            token_id=token.id,
            expires_at=token.expires_at,
            last_used_at=token.last_used_at,
        )
    principal_cache.tokens.put(token_digest, cached)
    return cached


async def principal_for_token(database: Database, plaintext: str) -> Principal | None:
    if not plaintext.startswith(TOKEN_PREFIX):
        return None
    now = utcnow()
    token_digest = digest(plaintext)
    cached = principal_cache.tokens.get(token_digest)
    if cached is None:
        # One lookup per token at a time: when the cached entry runs out under load, every
        # request of that client would otherwise read the token (and touch it) at once, and
        # queue up behind each other for seconds.
        lookup = _lookups.get(token_digest)
        if lookup is None:
            lookup = asyncio.ensure_future(_look_up(database, token_digest, now))
            _lookups[token_digest] = lookup
            lookup.add_done_callback(lambda _: _lookups.pop(token_digest, None))
        cached = await asyncio.shield(lookup)
        if cached is None:
            return None
    elif cached.expires_at is not None and cached.expires_at <= now:
        return None
    if cached.last_used_at is None or cached.last_used_at < now - TOUCH_INTERVAL:
        cached.last_used_at = now  # first: the requests arriving meanwhile need not touch it too
        async with database.transaction() as session:
            await repository.touch_token(session, cached.token_id, now, now - TOUCH_INTERVAL)
    return cached.principal
