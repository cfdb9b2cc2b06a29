"""The delivery log: one row per effect outside Allot (an email, a Telegram message), keyed by
its idempotency key (owned by the kernel, prefix `kernel_`).

status: pending -> sending -> delivered | dead; a failed try goes back to pending (with
`next_attempt_at`), and a `sending` row whose lease ran out is claimed and sent again.
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

# Rows a runner may claim: pending ones once due, sending ones once their lease ran out (the
# claim sets `next_attempt_at` to the lease's end). One partial index serves both, in due order.
CLAIMABLE = ("pending", "sending")
CLAIMABLE_SQL = "status IN ('pending', 'sending')"


class Delivery(Base):
    __tablename__ = "kernel_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    # The idempotency key: a second enqueue with it is a repeat, never a second message.
    key: Mapped[str] = mapped_column(String(255), unique=True)
    channel: Mapped[str] = mapped_column(String(32))
    # Personal data, in a column of its own so erasure can find and overwrite it.
    recipient: Mapped[str] = mapped_column(String(320))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # Claims so far: each may have reached the provider.
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]
    # What the provider calls it: the email's Message-ID, Telegram's message_id.
    provider_ref: Mapped[str | None] = mapped_column(String(255))
    # Written by the runner from the channel's own error text, which never holds a secret.
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index(
            "ix_kernel_deliveries_due",
            "next_attempt_at",
            postgresql_where=text(CLAIMABLE_SQL),
            sqlite_where=text(CLAIMABLE_SQL),
        ),
    )
