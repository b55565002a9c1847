"""dead letter causes (stored when a task dies, indexed for the inbox's GROUP BY) and
orders by creation time (the console's search by date)

Revision ID: 5b1d0c7e9a21
Revises: 5b1f0c3e9a27
Create Date: 2026-11-28 15:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from orderflow.deadletters.causes import fingerprint

revision: str = "5b1d0c7e9a21"
down_revision: str | None = "5b1f0c3e9a27"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEAD = sa.text("status = 'dead'")


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cause", sa.String(length=500), nullable=True))
    # The dead letters already there get their cause (few: they need a person each).
    tasks = sa.table(
        "tasks",
        sa.column("id", sa.BigInteger()),
        sa.column("kind", sa.String()),
        sa.column("status", sa.String()),
        sa.column("error_class", sa.String()),
        sa.column("last_error", sa.Text()),
        sa.column("cause", sa.String()),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(tasks.c.id, tasks.c.kind, tasks.c.error_class, tasks.c.last_error).where(
            tasks.c.status.in_(["dead", "discarded"])
        )
    ).all()
    for task_id, kind, error_class, last_error in rows:
        bind.execute(
            tasks.update()
            .where(tasks.c.id == task_id)
            .values(cause=fingerprint(kind, error_class, last_error))
        )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tasks_dead_cause",
            ["cause", "id"],
            unique=False,
            postgresql_include=["last_failed_at", "kind", "error_class"],
            postgresql_where=DEAD,
            sqlite_where=DEAD,
        )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("ix_orders_created_at_id", ["created_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_created_at_id")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_dead_cause", postgresql_where=DEAD, sqlite_where=DEAD)
        batch_op.drop_column("cause")
