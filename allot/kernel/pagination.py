"""Cursor (keyset) pagination over time-ordered ids: stable under inserts, O(limit) per page.

The cursor is opaque to clients (base64url JSON); a tampered or foreign cursor is a 400, never a
500 and never a silently wrong page.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, Field
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from allot.kernel.errors import InvalidCursor

T = TypeVar("T")
MAX_LIMIT = 200


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` to get the next page; null on the last page"
    )


def encode_cursor(last_id: uuid.UUID) -> str:
    raw = json.dumps({"v": 1, "after": str(last_id)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> uuid.UUID:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(data, dict) or data.get("v") != 1:
            raise ValueError("unknown cursor version")
        return uuid.UUID(str(data["after"]))
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor(detail="The cursor is not one this API issued") from exc


class PageParams(BaseModel):
    cursor: str | None = None
    limit: int = 50


def page_params(
    cursor: Annotated[str | None, Query(description="Opaque cursor from `next_cursor`")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")] = 50,
) -> PageParams:
    return PageParams(cursor=cursor, limit=limit)


async def paginate(
    session: AsyncSession,
    statement: Select[Any],
    id_column: InstrumentedAttribute[uuid.UUID],
    params: PageParams,
) -> tuple[Sequence[Any], str | None]:
    """Newest first. Returns the rows of one page and the cursor of the next (or None)."""
    if params.cursor:
        statement = statement.where(id_column < decode_cursor(params.cursor))
    statement = statement.order_by(id_column.desc()).limit(params.limit + 1)
    rows = list((await session.execute(statement)).scalars())
    has_more = len(rows) > params.limit
    rows = rows[: params.limit]
    next_cursor = encode_cursor(rows[-1].id) if has_more and rows else None
    return rows, next_cursor
