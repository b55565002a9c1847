"""order replacements: a re-sent parcel is a new order that names the one it replaces

Revision ID: 7c2e4a9b1d05
Revises: 7c3e9b1d5a40
Create Date: 2026-11-28 18:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7c2e4a9b1d05"
down_revision: str | None = "7c3e9b1d5a40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # One column, read both ways: `replaces` on the new order; the original's `replaced_by`
    # is the row whose `replaces` names it (unique: at most one replacement per order).
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("replaces", BIG_ID, nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_orders_replaces_orders"), "orders", ["replaces"], ["id"]
        )
        batch_op.create_index(batch_op.f("ix_orders_replaces"), ["replaces"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_orders_replaces"))
        batch_op.drop_constraint(batch_op.f("fk_orders_replaces_orders"), type_="foreignkey")
        batch_op.drop_column("replaces")
