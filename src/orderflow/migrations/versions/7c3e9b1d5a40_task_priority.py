"""task priority: orders placed one by one are claimed before bulk intake's, lane by lane

Revision ID: 7c3e9b1d5a40
Revises: e5a1c0f3b7d2
Create Date: 2026-11-28 18:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7c3e9b1d5a40"
down_revision: str | None = "e5a1c0f3b7d2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A constant default: PostgreSQL adds the column without rewriting the table.
    op.add_column(
        "tasks", sa.Column("priority", sa.SmallInteger(), server_default="0", nullable=False)
    )
    op.drop_index("ix_tasks_claim", table_name="tasks")
    op.create_index("ix_tasks_claim", "tasks", ["status", "priority", "run_at"])


def downgrade() -> None:
    op.drop_index("ix_tasks_claim", table_name="tasks")
    op.create_index("ix_tasks_claim", "tasks", ["status", "run_at"])
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("priority")
