"""kernel deliveries

The delivery log (allot/kernel/delivery, docs/deliveries.md): one row per email or Telegram
message, unique by idempotency key, with a partial index over the rows a runner may claim
(pending, and sending ones whose lease ran out). On PostgreSQL it is vacuumed after every 1,000
changes like the other queue tables (0004): rows are taken from the head of that index.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22 10:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLAIMABLE = "status IN ('pending', 'sending')"


def upgrade() -> None:
    op.create_table(
        "kernel_deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column(
            "payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("provider_ref", sa.String(length=255), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kernel_deliveries")),
        sa.UniqueConstraint("key", name=op.f("uq_kernel_deliveries_key")),
    )
    with op.batch_alter_table("kernel_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_kernel_deliveries_due",
            ["next_attempt_at"],
            unique=False,
            postgresql_where=sa.text(CLAIMABLE),
            sqlite_where=sa.text(CLAIMABLE),
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE kernel_deliveries SET (autovacuum_vacuum_scale_factor = 0.0, "
            "autovacuum_vacuum_threshold = 1000, autovacuum_analyze_scale_factor = 0.0, "
            "autovacuum_analyze_threshold = 1000)"
        )


def downgrade() -> None:
    with op.batch_alter_table("kernel_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_kernel_deliveries_due")
    op.drop_table("kernel_deliveries")
