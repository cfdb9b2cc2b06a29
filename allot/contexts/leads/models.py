"""Leads tables (prefix `leads_`).

Invariants:
- L1 dedup: one lead per (source, external_id); leads without an external id never collide
  (NULLs are distinct in the unique constraint on both backends).
- L2 pipeline: a lead's `status` is always a key of `leads_statuses`; it only moves along a row
  of `leads_transitions` (conditional UPDATE on the old status), and the pipeline cannot be
  replaced with one that drops a status some lead is in.
- L3 assignment mirror: `assignee_id` follows routing's owner of the work item `lead:<id>`;
  `assignee_changed_at` orders the changes so a late, stale routing event cannot undo a newer one.
- L4 every change leaves a row in `leads_activities` (the lead's timeline), an audit entry and an
  outbox event, all in the transaction of the change.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from allot.kernel.clock import utcnow
from allot.kernel.db import Base, IdMixin
from allot.kernel.money import Money

DEFAULT_FIRST_RESPONSE_SECONDS = 900
DEFAULT_SLA_SOURCE = "*"  # the SLA row that applies to sources without their own
SOURCE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")


class Lead(IdMixin, Base):
    __tablename__ = "leads_leads"

    source: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str | None] = mapped_column(String(255))
    customer_id: Mapped[uuid.UUID]
    status: Mapped[str] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    term_months: Mapped[int | None] = mapped_column(Integer)
    assignee_id: Mapped[uuid.UUID | None]  # a routing agent's id
    assignee_changed_at: Mapped[datetime | None]
    first_response_due_at: Mapped[datetime | None]
    first_responded_at: Mapped[datetime | None]
    lost_reason: Mapped[str | None] = mapped_column(String(32))
    closed_at: Mapped[datetime | None]
    # Lower-cased customer name, phone digits, e-mail and external id as taken in, for the text
    # filter (the customer card lives in another context, so the list cannot join it).
    search_text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("source", "external_id"),  # L1
        # Keyset pages are `ORDER BY id DESC` under one equality filter: one index range each.
        Index("ix_leads_leads_status_id", "status", "id"),
        Index("ix_leads_leads_assignee_id", "assignee_id", "id"),
        Index("ix_leads_leads_source_id", "source", "id"),
        Index("ix_leads_leads_customer", "customer_id"),
        Index("ix_leads_leads_created_at", "created_at"),
    )

    @property
    def amount(self) -> Money | None:
        if self.amount_minor is None:
            return None
        return Money(self.amount_minor, self.currency or "RUB")

    def sla_state(self, now: datetime) -> str | None:
        """`met`, `breached` or `pending` (None when the lead has no due time)."""
        due = self.first_response_due_at
        if due is None:
            return None
        if self.first_responded_at is not None:
            return "met" if self.first_responded_at <= due else "breached"
        return "breached" if now > due else "pending"


class LeadStatus(Base):
    __tablename__ = "leads_statuses"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    label_ru: Mapped[str] = mapped_column(String(100))
    label_en: Mapped[str] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(Integer, default=0)
    is_initial: Mapped[bool] = mapped_column(Boolean, default=False)
    is_terminal: Mapped[bool] = mapped_column(Boolean, default=False)
    is_won: Mapped[bool] = mapped_column(Boolean, default=False)

    def label(self, locale: str) -> str:
        return self.label_en if locale == "en" else self.label_ru


class LeadTransition(Base):
    __tablename__ = "leads_transitions"

    from_key: Mapped[str] = mapped_column(ForeignKey("leads_statuses.key"), primary_key=True)
    to_key: Mapped[str] = mapped_column(ForeignKey("leads_statuses.key"), primary_key=True)


class SlaPolicy(Base):
    """First-response time per lead source; the row `*` applies to every other source."""

    __tablename__ = "leads_sla_policies"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_response_seconds: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Activity(IdMixin, Base):
    """One entry of a lead's timeline: created, status_changed, assigned, unassigned, note."""

    __tablename__ = "leads_activities"

    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads_leads.id"))
    kind: Mapped[str] = mapped_column(String(24))
    from_status: Mapped[str | None] = mapped_column(String(64))
    to_status: Mapped[str | None] = mapped_column(String(64))
    agent_id: Mapped[uuid.UUID | None]
    reason: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[str | None] = mapped_column(Text)  # the note's text
    actor_kind: Mapped[str] = mapped_column(String(16), default="system")
    actor_id: Mapped[uuid.UUID | None]
    actor_label: Mapped[str] = mapped_column(String(255), default="system")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_leads_activities_lead", "lead_id", "id"),)


IMPORT_STATUSES = ("running", "done", "failed")


class LeadImport(IdMixin, Base):
    """One CSV import of leads (CLI, web page or API) and its progress. The counts and the
    rejected lines are updated in the transaction of each batch, so they always say what was
    committed. `rejects` keeps at most `MAX_STORED_REJECTS` lines ({line, field, reason, ...});
    `rejected_rows` counts them all."""

    __tablename__ = "leads_imports"

    file_name: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(64))  # for rows without a source column
    status: Mapped[str] = mapped_column(String(16), default="running")
    total_rows: Mapped[int | None] = mapped_column(Integer)  # estimated until done
    processed_rows: Mapped[int] = mapped_column(Integer, default=0)
    imported_rows: Mapped[int] = mapped_column(Integer, default=0)
    rejected_rows: Mapped[int] = mapped_column(Integer, default=0)
    rejects: Mapped[list[Any]] = mapped_column(default=list)
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[uuid.UUID | None]  # the user who started it (None: the CLI)
    created_by_label: Mapped[str] = mapped_column(String(255), default="system")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_leads_imports_created_by", "created_by", "id"),)
