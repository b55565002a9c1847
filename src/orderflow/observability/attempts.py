"""Attempt records are evidence for investigations; past their retention they are archived
to gzip-compressed JSON lines, and removed from the table only once the file is safely written."""

from __future__ import annotations

import gzip
import json
import os
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, select

from orderflow.db import Database
from orderflow.tasks.models import Task, TaskAttempt

BATCH = 5000


def export_attempts(db: Database, *, older_than: datetime, path: Path, remove: bool) -> int:
    """Write every attempt started before `older_than` to `path`; returns how many."""
    written = 0
    last_id = 0
    tmp = path.with_suffix(path.suffix + ".partial")
    with gzip.open(tmp, "wt", encoding="utf-8") as out:
        while True:
            with db.read() as session:
                rows = session.execute(
                    select(TaskAttempt, Task.key, Task.kind, Task.order_id)
                    .join(Task, Task.id == TaskAttempt.task_id)
                    .where(TaskAttempt.started_at < older_than, TaskAttempt.id > last_id)
                    .order_by(TaskAttempt.id)
                    .limit(BATCH)
                ).all()
            if not rows:
                break
            for attempt, key, kind, order_id in rows:
                out.write(
                    json.dumps(
                        {
                            "id": attempt.id,
                            "task_id": attempt.task_id,
                            "task_key": key,
                            "step": kind,
                            "order_id": order_id,
                            "attempt": attempt.attempt,
                            "worker": attempt.worker,
                            "started_at": attempt.started_at.isoformat(),
                            "finished_at": attempt.finished_at.isoformat(),
                            "outcome": attempt.outcome,
                            "http_status": attempt.http_status,
                            "error": attempt.error,
                        },
                        separators=(",", ":"),
                    )
                    + "\n"
                )
            written += len(rows)
            last_id = rows[-1][0].id
        out.flush()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)
    if remove and written:
        with db.transaction() as session:
            session.execute(
                delete(TaskAttempt).where(
                    TaskAttempt.started_at < older_than, TaskAttempt.id <= last_id
                )
            )
    return written
