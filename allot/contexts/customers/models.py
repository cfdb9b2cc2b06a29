"""Customer tables: cards, their contacts and external ids, and each card's timeline.

Deduplication is the database's job, not a read-then-write in Python: a normalized contact
`(kind, value)` and an external id `(source, external_id)` are UNIQUE across all cards, so two
concurrent intakes of one phone can never end up holding it on two cards.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from allot.kernel.clock import utcnow
from allot.kernel.db import Base, IdMixin, TimestampMixin

CUSTOMER_FK = "customers_customers.id"
NAME_MAX_LENGTH = 300
SOURCE_MAX_LENGTH = 100
CONTACT_MAX_LENGTH = 320
EXTERNAL_ID_MAX_LENGTH = 255
KINDS = ("person", "company")
CONTACT_KINDS = ("phone", "email")
# Erased contacts and external ids keep their rows (and ids) with this prefix + their row id as
# the value: unique, so the UNIQUE constraints hold, and never a phone or an address.
ERASED_PREFIX = "erased:"


class Customer(IdMixin, TimestampMixin, Base):
    """A customer card: a person or a company. Never deleted; merged or erased instead."""

    __tablename__ = "customers_customers"

    kind: Mapped[str] = mapped_column(String(16), default="person")
    name: Mapped[str | None] = mapped_column(String(NAME_MAX_LENGTH))
    # casefolded copy of `name`: SQLite's LIKE folds only ASCII, so Cyrillic search needs it.
    search_name: Mapped[str | None] = mapped_column(String(NAME_MAX_LENGTH))
    source: Mapped[str] = mapped_column(String(SOURCE_MAX_LENGTH))
    # None: not asked yet; True/False: the answer, recorded with when and from where.
    consent: Mapped[bool | None]
    consent_source: Mapped[str | None] = mapped_column(String(SOURCE_MAX_LENGTH))
    consent_at: Mapped[datetime | None]
    merged_into_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey(CUSTOMER_FK), index=True)
    merged_at: Mapped[datetime | None]
    erased_at: Mapped[datetime | None]


class Contact(IdMixin, Base):
    """A phone (E.164) or an e-mail (lowercased), with the source it came from."""

    __tablename__ = "customers_contacts"

    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(CUSTOMER_FK), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(CONTACT_MAX_LENGTH))
    source: Mapped[str] = mapped_column(String(SOURCE_MAX_LENGTH))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("kind", "value"),)


class ExternalId(IdMixin, Base):
    """The id a source system (a CRM, a form provider) gives this customer."""

    __tablename__ = "customers_external_ids"

    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(CUSTOMER_FK), index=True)
    source: Mapped[str] = mapped_column(String(SOURCE_MAX_LENGTH))
    external_id: Mapped[str] = mapped_column(String(EXTERNAL_ID_MAX_LENGTH))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("source", "external_id"),)


class TimelineEntry(IdMixin, Base):
    """Something that happened to a customer. `title` is an English msgid translated when shown,
    with `data` as its placeholders, so each reader sees the timeline in their own language."""

    __tablename__ = "customers_timeline"

    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(CUSTOMER_FK))
    occurred_at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(Text)
    reference: Mapped[str | None] = mapped_column(String(255))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (Index("ix_customers_timeline_customer", "customer_id", "occurred_at", "id"),)
