"""Outbox and inbox tables (owned by the kernel, prefix `kernel_`).

The outbox keeps Debezium's column names (id, aggregatetype, aggregateid, type, payload) so a CDC
connector could read it unchanged; the remaining columns are the polling relay's bookkeeping.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from allot.kernel.clock import utcnow
from allot.kernel.db.base import Base
from allot.kernel.ids import new_id


class OutboxEvent(Base):
    __tablename__ = "kernel_outbox"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    aggregatetype: Mapped[str] = mapped_column(String(255))
    aggregateid: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(255))
    payload: Mapped[dict[str, Any]]
    headers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # pending -> dispatched | dead
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_until: Mapped[datetime | None]
    dispatched_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index(
            "ix_kernel_outbox_pending",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )


class InboxEntry(Base):
    """One row per (consumer, event) applied; written in the same transaction as the effect."""

    __tablename__ = "kernel_inbox"

    consumer: Mapped[str] = mapped_column(String(200), primary_key=True)
    message_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
