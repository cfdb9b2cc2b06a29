"""routing decisions: index of each queue's assignments (fair share)

The fair-share report (routing/fairness.py) reads a queue's last W assignments, newest first:
`WHERE queue_id = ? AND outcome = 'assigned' ORDER BY occurred_at DESC, id DESC LIMIT W`. This
partial index serves it in index order and stops after W entries, however long the decision log
grows; offers and waits (most rows in offer-mode queues) are not in it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 10:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ASSIGNED = "outcome = 'assigned'"


def upgrade() -> None:
    with op.batch_alter_table("routing_decisions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_routing_decisions_assigned",
            ["queue_id", "occurred_at", "id"],
            unique=False,
            postgresql_where=sa.text(ASSIGNED),
            sqlite_where=sa.text(ASSIGNED),
        )


def downgrade() -> None:
    with op.batch_alter_table("routing_decisions", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_routing_decisions_assigned",
            postgresql_where=sa.text(ASSIGNED),
            sqlite_where=sa.text(ASSIGNED),
        )
