"""Automatic redrive of dead letters that may heal (`exhausted`: a request that kept failing
while its dependency was up), once that dependency has been healthy for a while; a few at a
time (ramped), a bounded number of times each. Never poison, never permanent refusals."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from orderflow.clock import now
from orderflow.deadletters import service
from orderflow.dependencies import health
from orderflow.orders.workflow import DEPENDENCY_OF
from orderflow.tasks.errors import ErrorClass
from orderflow.tasks.models import Task, TaskStatus

ACTOR = "auto-redrive"


def auto_redrive(session: Session, *, per_run: int, max_times: int, healthy_for: timedelta) -> int:
    """Redrive up to `per_run` healable dead letters; returns how many."""
    states = health.states(session)
    at = now()
    chosen: list[Task] = []
    candidates = session.scalars(
        select(Task)
        .where(Task.status == TaskStatus.DEAD, Task.error_class == ErrorClass.EXHAUSTED)
        .order_by(Task.id)
    )
    for task in candidates:
        if len(chosen) >= per_run:
            break
        dependency = states.get(DEPENDENCY_OF.get(task.kind, ""))
        healthy = (
            dependency is not None
            and dependency.state == health.CLOSED
            and at - dependency.state_since >= healthy_for
        )
        if healthy and int(task.payload.get("auto_redrives", 0)) < max_times:
            chosen.append(task)
    for task in sorted(chosen, key=lambda t: (t.order_id or 0, t.id)):  # global lock order
        task.payload = {
            **task.payload,
            "auto_redrives": int(task.payload.get("auto_redrives", 0)) + 1,
        }
        session.flush()
        service.redrive(session, task.id, actor=ACTOR)
    return len(chosen)
