"""`Idempotency-Key` on creating POSTs (Stripe semantics, see shared/reference/integrations.md §3).

- Same principal + same key + same body within 24 h -> the stored status and body, replayed.
- Same key + different body -> 409 `idempotency-key-conflict`.
- The key row is written in the SAME transaction as the creation, so a request that failed
  (validation error, rollback) stores nothing and may simply be retried; two concurrent requests
  with one key serialise on the unique index and the second replays the first's response.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Response
from sqlalchemy import LargeBinary, String, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from allot.kernel.auth import Principal, optional_principal
from allot.kernel.clock import utcnow
from allot.kernel.config import get_settings
from allot.kernel.db.base import Base
from allot.kernel.errors import IdempotencyConflict, ValidationFailed
from allot.kernel.web.uow import before_commit, write_session

MAX_KEY_LENGTH = 255


class IdempotencyRecord(Base):
    __tablename__ = "kernel_idempotency_keys"

    principal: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH), primary_key=True)
    route: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None]
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    response_media_type: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class IdempotentReplay(Exception):
    """Raised by the dependency to short-circuit the endpoint with the stored response."""

    def __init__(self, record: IdempotencyRecord) -> None:
        super().__init__("idempotent replay")
        # Copied out now: the request's transaction rolls back (expiring the row) before replay.
        self.body = record.response_body or b""
        self.status_code = record.status_code or 200
        self.media_type = record.response_media_type or "application/json"

    def response(self) -> Response:
        return Response(
            content=self.body,
            status_code=self.status_code,
            media_type=self.media_type,
            headers={"Idempotent-Replayed": "true"},
        )


def _request_hash(method: str, route: str, body: bytes) -> str:
    try:  # the same JSON with keys in another order or other spacing is the same request
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(method.encode() + b" " + route.encode() + b"\n" + canonical).hexdigest()


IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Retry-safe creation: the same key and body within 24 h return the first "
        "response; the same key with another body is a 409.",
    ),
]


async def idempotency_key(
    request: Request,
    session: Annotated[AsyncSession, Depends(write_session)],
    principal: Annotated[Principal | None, Depends(optional_principal)],
    key: IdempotencyKeyHeader = None,
) -> str | None:
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise ValidationFailed.on("header.Idempotency-Key", f"1 to {MAX_KEY_LENGTH} characters")
    owner = str(principal.user_id) if principal else "anonymous"
    matched = request.scope.get("route")
    route = str(getattr(matched, "path", request.url.path))
    request_hash = _request_hash(request.method, route, await request.body())
    now = utcnow()
    ttl = timedelta(seconds=get_settings().idempotency_ttl_seconds)

    # A key older than the retention window counts as new (as Stripe's pruning does).
    await session.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.principal == owner,
            IdempotencyRecord.key == key,
            IdempotencyRecord.created_at < now - ttl,
        )
    )
    dialect = session.bind.dialect.name if session.bind else "sqlite"
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    inserted: Any = await session.execute(
        insert(IdempotencyRecord)
        .values(principal=owner, key=key, route=route, request_hash=request_hash, created_at=now)
        .on_conflict_do_nothing()
    )
    if inserted.rowcount != 1:
        existing = (
            await session.execute(
                select(IdempotencyRecord).where(
                    IdempotencyRecord.principal == owner, IdempotencyRecord.key == key
                )
            )
        ).scalar_one()
        if existing.request_hash != request_hash:
            raise IdempotencyConflict(
                detail="This Idempotency-Key was used with a different request body or route"
            )
        raise IdempotentReplay(existing)

    async def store_response(write: AsyncSession, response: Response) -> None:
        body = getattr(response, "body", b"")
        record = await write.get(IdempotencyRecord, (owner, key))
        if record is not None:
            record.status_code = response.status_code
            record.response_body = bytes(body)
            record.response_media_type = response.media_type

    before_commit(request, store_response)
    return key


IdempotencyKey = Annotated[str | None, Depends(idempotency_key)]


async def purge_expired(session: AsyncSession) -> int:
    ttl = timedelta(seconds=get_settings().idempotency_ttl_seconds)
    result: Any = await session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.created_at < utcnow() - ttl)
    )
    return int(result.rowcount)
