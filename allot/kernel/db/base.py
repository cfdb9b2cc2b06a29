"""Declarative base shared by every context's models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import BigInteger, MetaData, String, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, composite, mapped_column
from sqlalchemy.orm import relationship as sa_relationship

from allot.kernel.clock import utcnow
from allot.kernel.db.types import JSONType, UTCDateTime
from allot.kernel.ids import new_id
from allot.kernel.money import Money

# Every constraint gets a predictable name, so Alembic (and SQLite batch mode) can alter it.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        uuid.UUID: Uuid(),
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
    }


class IdMixin:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def relationship(*args: Any, **kwargs: Any) -> Any:
    """Relationships never lazy-load implicitly: load them with selectinload/joinedload or fail."""
    kwargs.setdefault("lazy", "raise")
    return sa_relationship(*args, **kwargs)


def money_columns(prefix: str) -> tuple[Mapped[int], Mapped[str]]:
    """Two columns `<prefix>_minor` and `<prefix>_currency` for a Money composite."""
    return (
        mapped_column(f"{prefix}_minor", BigInteger, nullable=False),
        mapped_column(f"{prefix}_currency", String(3), nullable=False, default="RUB"),
    )


def money(minor_column: Any, currency_column: Any) -> Any:
    """Map two columns to a Money value: `price = money(price_minor, price_currency)`."""
    return composite(Money, minor_column, currency_column)
