"""routing agent timeline (availability and capacity history for the simulator)

Append-only rows of each agent's availability and capacity after every change, so the
what-if simulator can replay who could take work when (the agents table keeps only the present).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21 14:14:54.328444

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "routing_agent_timeline",
        sa.Column("agent_id", sa.Uuid(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("change", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("on_leave", sa.Boolean(), nullable=False),
        sa.Column("off_shift", sa.Boolean(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column(
            "capacity_by_kind",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("daily_quota", sa.Integer(), nullable=True),
        sa.Column("monthly_quota", sa.Integer(), nullable=True),
        sa.Column(
            "attributes", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routing_agent_timeline")),
    )
    with op.batch_alter_table("routing_agent_timeline", schema=None) as batch_op:
        batch_op.create_index("ix_routing_agent_timeline_agent", ["agent_id", "at"], unique=False)
        batch_op.create_index("ix_routing_agent_timeline_at", ["at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("routing_agent_timeline", schema=None) as batch_op:
        batch_op.drop_index("ix_routing_agent_timeline_at")
        batch_op.drop_index("ix_routing_agent_timeline_agent")

    op.drop_table("routing_agent_timeline")
