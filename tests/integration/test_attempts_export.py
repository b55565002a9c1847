"""Attempt records past their retention are archived to gzip JSON lines, then removed."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, update

from orderflow.clock import now
from orderflow.observability.attempts import export_attempts
from orderflow.tasks.models import Task, TaskAttempt
from tests.support.stack import Stack


def _count(stack: Stack) -> int:
    with stack.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(TaskAttempt)) or 0)


def test_old_attempts_are_archived_and_only_then_removed(stack: Stack, tmp_path: Path) -> None:
    """Attempts older than the cutoff land in the archive, readable, and leave the table."""
    stack.product("WIDGET", stock=5)
    order = stack.place(stack.customer(), [("WIDGET", 1)])
    stack.work_until_status(order["id"], "delivered")
    total = _count(stack)
    with stack.db.transaction() as session:  # age the first two attempts by 100 days
        old_ids = list(
            session.scalars(
                select(TaskAttempt.id)
                .join(Task)
                .where(Task.kind.in_(["charge", "book"]))
                .order_by(TaskAttempt.id)
            )
        )
        session.execute(
            update(TaskAttempt)
            .where(TaskAttempt.id.in_(old_ids))
            .values(started_at=now() - timedelta(days=100), finished_at=now() - timedelta(days=100))
        )
    archive = tmp_path / "attempts.jsonl.gz"
    written = export_attempts(
        stack.db, older_than=now() - timedelta(days=90), path=archive, remove=True
    )
    assert written == 2
    with gzip.open(archive, "rt") as f:
        records = [json.loads(line) for line in f]
    assert [r["id"] for r in records] == old_ids
    assert [r["step"] for r in records] == ["charge", "book"]
    assert {r["outcome"] for r in records} == {"ok"}
    assert _count(stack) == total - 2
