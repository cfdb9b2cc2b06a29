"""A short-lived, per-process memory of who a bearer token belongs to.

Every API call authenticates; without this, each one pays four queries (token, user, roles,
teams) before doing its work. In this process a change that alters what a token may do
(revocation, deactivation, roles, teams, erasure) forgets every entry when its transaction
commits; another API process notices within `TTL_SECONDS`. Expiry is checked against the
(injectable) clock on every use, never cached.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from allot.kernel.auth import Principal
from allot.kernel.cache import ShortLivedCache

TTL_SECONDS = 5.0


@dataclass(slots=True)
class CachedToken:
    principal: Principal
    token_id: uuid.UUID
    expires_at: datetime | None
    last_used_at: datetime | None


tokens: ShortLivedCache[CachedToken] = ShortLivedCache("identity.tokens", TTL_SECONDS)


def forget_on_commit(session: AsyncSession) -> None:
    """Call from any change that alters what a token lets its holder do."""
    tokens.forget_on_commit(session)
