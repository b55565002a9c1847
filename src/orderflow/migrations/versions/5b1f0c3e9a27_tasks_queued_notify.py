"""tasks queued notify

On PostgreSQL, a transaction that inserts tasks notifies channel `orderflow_tasks` when it
commits (one statement-level trigger; PostgreSQL folds a transaction's identical notifications
into one), so an idle worker claims new work at once instead of at its next idle poll. SQLite
has no notifications: its workers poll (`ORDERFLOW_WORKER_IDLE_SECONDS`).

Revision ID: 5b1f0c3e9a27
Revises: ac992d2913d9
Create Date: 2026-11-28 15:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "5b1f0c3e9a27"
down_revision: str | None = "ac992d2913d9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION orderflow_tasks_queued() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('orderflow_tasks', '');
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER tasks_queued AFTER INSERT ON tasks "
        "FOR EACH STATEMENT EXECUTE FUNCTION orderflow_tasks_queued()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER tasks_queued ON tasks")
    op.execute("DROP FUNCTION orderflow_tasks_queued()")
