"""backlog head index includes id

The backlog head query orders by (priority DESC, enqueued_at, id); with `id` in the partial
index the head is read in index order, without sorting the queue's whole backlog (PostgreSQL
sorted all waiting items whenever its statistics underestimated them).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 10:25:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WAITING = "state = 'waiting'"


def _create(columns: list[object]) -> None:
    with op.batch_alter_table("routing_work_items", schema=None) as batch_op:
        batch_op.create_index(
            "ix_routing_items_waiting",
            columns,
            unique=False,
            postgresql_where=sa.text(WAITING),
            sqlite_where=sa.text(WAITING),
        )


def upgrade() -> None:
    with op.batch_alter_table("routing_work_items", schema=None) as batch_op:
        batch_op.drop_index("ix_routing_items_waiting")
    _create(["queue_id", sa.literal_column("priority DESC"), "enqueued_at", "id"])


def downgrade() -> None:
    with op.batch_alter_table("routing_work_items", schema=None) as batch_op:
        batch_op.drop_index("ix_routing_items_waiting")
    _create(["queue_id", sa.literal_column("priority DESC"), "enqueued_at"])
