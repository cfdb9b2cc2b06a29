"""JSON shapes of the identity API. Requests forbid unknown fields (a typo is a 422 naming the
field, never silently ignored); e-mail, password and role rules live in the service."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from .models import ApiToken, Team, User

Locale = Literal["ru", "en"]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=320, examples=["operator@example.com"])
    password: str | None = Field(
        default=None, max_length=1024, description="At least 10 characters; null: no password"
    )
    roles: list[str] = Field(default_factory=list, examples=[["operator"]])
    display_name: str | None = Field(default=None, max_length=200)
    locale: Locale = "ru"
    team_ids: list[uuid.UUID] = Field(default_factory=list)


class UserUpdate(BaseModel):
    """Only the fields present change."""

    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(default=None, max_length=320)
    display_name: str | None = Field(default=None, max_length=200)
    roles: list[str] | None = None
    team_ids: list[uuid.UUID] | None = None
    locale: Locale | None = None
    password: str | None = Field(default=None, max_length=1024)


class MeUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    display_name: str | None = Field(default=None, max_length=200)
    locale: Locale | None = None


class UserOut(BaseModel):
    id: uuid.UUID
    email: str
    display_name: str
    roles: list[str]
    team_ids: list[uuid.UUID]
    is_active: bool
    locale: str
    created_at: datetime
    last_login_at: datetime | None

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            email=user.email,
            display_name=user.display_name,
            roles=sorted(user.role_names),
            team_ids=sorted(user.team_ids),
            is_active=user.is_active,
            locale=user.locale,
            created_at=user.created_at,
            last_login_at=user.last_login_at,
        )


class MeOut(UserOut):
    permissions: list[str] = Field(description="What this caller may do right now")
    via: Literal["session", "token"]
    token_scopes: list[str] | None = None


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, examples=["CRM sync"])
    scopes: list[str] | None = Field(
        default=None, description="Permissions the token may use; null: all of yours"
    )
    expires_at: AwareDatetime | None = None


class TokenOut(BaseModel):
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    prefix: str = Field(description="The token's first characters, to tell tokens apart")
    scopes: list[str] | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, token: ApiToken) -> TokenOut:
        return cls(
            id=token.id,
            user_id=token.user_id,
            name=token.name,
            prefix=token.prefix,
            scopes=token.scopes,
            created_at=token.created_at,
            expires_at=token.expires_at,
            last_used_at=token.last_used_at,
            revoked_at=token.revoked_at,
        )


class TokenIssued(TokenOut):
    token: str = Field(description="The secret; shown this once, store it now")


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)


class TeamOut(BaseModel):
    id: uuid.UUID
    name: str

    @classmethod
    def of(cls, team: Team) -> TeamOut:
        return cls(id=team.id, name=team.name)
