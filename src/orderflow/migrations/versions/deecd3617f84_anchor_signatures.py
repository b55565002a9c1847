"""anchor signatures

Anchors carry an Ed25519 signature made with a key kept outside the database (see
`orderflow.audit.signing`) and the id of that key; both NULL for an unsigned anchor (no key
configured, and every anchor made before this revision). Plain ADD COLUMN on both dialects:
SQLite needs no table copy for it, so the append-only triggers on `audit_anchors` stay.

Revision ID: deecd3617f84
Revises: 18164fc7268c
Create Date: 2026-11-23 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "deecd3617f84"
down_revision: str | None = "18164fc7268c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_anchors", sa.Column("signature", sa.String(length=128), nullable=True))
    op.add_column("audit_anchors", sa.Column("key_id", sa.String(length=16), nullable=True))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+): a batch table copy would lose the triggers.
    op.drop_column("audit_anchors", "key_id")
    op.drop_column("audit_anchors", "signature")
