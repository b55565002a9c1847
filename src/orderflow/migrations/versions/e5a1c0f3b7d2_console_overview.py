"""console overview: dependency history, backlog samples, what incidents told, chart indexes

Revision ID: e5a1c0f3b7d2
Revises: 5b1d0c7e9a21
Create Date: 2026-11-28 15:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import orderflow.db

revision: str = "e5a1c0f3b7d2"
down_revision: str | None = "5b1d0c7e9a21"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "dependency_changes",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("at", orderflow.db.UTCDateTime(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dependency_changes")),
    )
    op.create_index(op.f("ix_dependency_changes_at"), "dependency_changes", ["at"])
    op.create_index("ix_dependency_changes_name_at", "dependency_changes", ["name", "at"])
    op.create_table(
        "backlog_samples",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("at", orderflow.db.UTCDateTime(), nullable=False),
        sa.Column("step", sa.String(length=32), nullable=False),
        sa.Column("waiting", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backlog_samples")),
    )
    op.create_index(op.f("ix_backlog_samples_at"), "backlog_samples", ["at"])
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("messages", sa.JSON(), nullable=True))
    # The dashboard's charts: orders placed per minute, deliveries per minute.
    op.create_index("ix_audit_entries_to_status_at", "audit_entries", ["to_status", "at"])


def downgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_column("messages")
    op.drop_index("ix_audit_entries_to_status_at", table_name="audit_entries")
    op.drop_index(op.f("ix_backlog_samples_at"), table_name="backlog_samples")
    op.drop_table("backlog_samples")
    op.drop_index("ix_dependency_changes_name_at", table_name="dependency_changes")
    op.drop_index(op.f("ix_dependency_changes_at"), table_name="dependency_changes")
    op.drop_table("dependency_changes")
