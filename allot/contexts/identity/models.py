"""Identity tables: users with their roles and teams, browser sessions and API tokens.

Secrets are never stored: session cookies and API tokens are kept as sha256 digests (they are
random and high-entropy, so a fast hash is enough), passwords as argon2id hashes. Foreign keys
stay inside the context and cascade, so deleting a user takes its sessions and tokens with it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from allot.kernel.clock import utcnow
from allot.kernel.db import Base, IdMixin, TimestampMixin, relationship

EMAIL_MAX_LENGTH = 320
USER_FK = "identity_users.id"


class User(IdMixin, TimestampMixin, Base):
    __tablename__ = "identity_users"

    email: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    # None: no password sign-in (e.g. a service account that only uses tokens).
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(default=True)
    locale: Mapped[str] = mapped_column(String(8), default="ru")
    last_login_at: Mapped[datetime | None]
    deactivated_at: Mapped[datetime | None]

    roles: Mapped[list[UserRole]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="UserRole.role"
    )
    memberships: Mapped[list[TeamMember]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def role_names(self) -> frozenset[str]:
        return frozenset(r.role for r in self.roles)

    @property
    def team_ids(self) -> frozenset[uuid.UUID]:
        return frozenset(m.team_id for m in self.memberships)


class UserRole(Base):
    __tablename__ = "identity_user_roles"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(USER_FK, ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(32), primary_key=True)


class Team(IdMixin, TimestampMixin, Base):
    __tablename__ = "identity_teams"

    name: Mapped[str] = mapped_column(String(200), unique=True)


class TeamMember(Base):
    __tablename__ = "identity_team_members"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(USER_FK, ondelete="CASCADE"), primary_key=True
    )
    team_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("identity_teams.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class BrowserSession(IdMixin, Base):
    """A signed-in browser: the cookie holds the token, this row its digest."""

    __tablename__ = "identity_sessions"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(USER_FK, ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)

    user: Mapped[User] = relationship()


class ApiToken(IdMixin, Base):
    __tablename__ = "identity_tokens"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(USER_FK, ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the plaintext, so people can tell their tokens apart.
    prefix: Mapped[str] = mapped_column(String(16))
    # None: the token may do whatever its user may; a list narrows it to those permissions.
    scopes: Mapped[list[Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship()
