"""Reading dead letters: filtered lists, groups by cause (like ServicePulse's failure groups)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from orderflow.deadletters.causes import fingerprint
from orderflow.errors import NotFound
from orderflow.orders.models import order_reference
from orderflow.orders.workflow import DEPENDENCY_OF
from orderflow.tasks.models import Task, TaskAttempt, TaskStatus


@dataclass(frozen=True)
class Filter:
    step: str | None = None
    cause: str | None = None
    dependency: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "cause": self.cause,
            "dependency": self.dependency,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Filter:
        def when(key: str) -> datetime | None:
            return datetime.fromisoformat(data[key]) if data.get(key) else None

        return cls(
            step=data.get("step"),
            cause=data.get("cause"),
            dependency=data.get("dependency"),
            since=when("since"),
            until=when("until"),
        )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def cause_of(task: Task) -> str:
    return fingerprint(task.kind, task.error_class, task.last_error)


def _query(flt: Filter, after_id: int | None = None) -> Select[Task]:
    query = select(Task).where(Task.status == TaskStatus.DEAD).order_by(Task.id)
    if flt.step:
        query = query.where(Task.kind == flt.step)
    if flt.dependency:
        kinds = [k for k, dep in DEPENDENCY_OF.items() if dep == flt.dependency]
        query = query.where(Task.kind.in_(kinds))
    if flt.since:
        query = query.where(Task.last_failed_at >= flt.since)
    if flt.until:
        query = query.where(Task.last_failed_at < flt.until)
    if after_id is not None:
        query = query.where(Task.id > after_id)
    return query


def matching(
    session: Session, flt: Filter, *, after_id: int | None = None, limit: int | None = None
) -> list[Task]:
    """Dead letters matching the filter, oldest first (the cause is matched in Python)."""
    found: list[Task] = []
    cursor = after_id
    while limit is None or len(found) < limit:
        page = list(session.scalars(_query(flt, cursor).limit(500)))
        if not page:
            break
        cursor = page[-1].id
        found.extend(t for t in page if flt.cause is None or cause_of(t) == flt.cause)
    return found if limit is None else found[:limit]


def summary(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "step": task.kind,
        "dependency": DEPENDENCY_OF.get(task.kind),
        "order_id": task.order_id,
        "order_reference": order_reference(task.order_id) if task.order_id else None,
        "cause": cause_of(task),
        "error_class": task.error_class,
        "last_error": task.last_error,
        "attempts": task.attempts,
        "first_failed_at": _iso(task.first_failed_at),
        "last_failed_at": _iso(task.last_failed_at),
    }


def groups(tasks: list[Task]) -> list[dict[str, Any]]:
    by_cause: dict[str, list[Task]] = {}
    for task in tasks:
        by_cause.setdefault(cause_of(task), []).append(task)
    result = []
    for cause, members in by_cause.items():
        failed = [t.last_failed_at for t in members if t.last_failed_at]
        result.append(
            {
                "cause": cause,
                "step": members[0].kind,
                "error_class": members[0].error_class,
                "count": len(members),
                "oldest": _iso(min(failed)) if failed else None,
                "newest": _iso(max(failed)) if failed else None,
            }
        )
    return sorted(result, key=lambda g: (-int(g["count"]), str(g["cause"])))


def detail(session: Session, task_id: int) -> dict[str, Any]:
    task = session.get(Task, task_id)
    if task is None or task.status not in (TaskStatus.DEAD, TaskStatus.DISCARDED):
        raise NotFound(f"no dead letter with id {task_id}")
    attempts = session.scalars(
        select(TaskAttempt).where(TaskAttempt.task_id == task_id).order_by(TaskAttempt.id)
    ).all()
    return {
        **summary(task),
        "status": task.status,
        "payload": task.payload,
        "created_at": _iso(task.created_at),
        "attempt_log": [
            {
                "attempt": a.attempt,
                "worker": a.worker,
                "started_at": _iso(a.started_at),
                "duration_ms": round((a.finished_at - a.started_at).total_seconds() * 1000, 1),
                "outcome": a.outcome,
                "http_status": a.http_status,
                "error": a.error,
            }
            for a in attempts
        ],
    }


def cause_counts(session: Session) -> list[dict[str, Any]]:
    """Dead letters grouped by cause. The database groups by (step, class, error); the few
    distinct errors are then folded by their fingerprint (ids and times blanked)."""
    rows = session.execute(
        select(Task.kind, Task.error_class, Task.last_error, func.count())
        .where(Task.status == TaskStatus.DEAD)
        .group_by(Task.kind, Task.error_class, Task.last_error)
    ).all()
    causes: dict[str, dict[str, Any]] = {}
    for kind, error_class, error, count in rows:
        cause = fingerprint(kind, error_class, error)
        entry = causes.setdefault(cause, {"cause": cause, "step": kind, "count": 0})
        entry["count"] += int(count)
    return sorted(causes.values(), key=lambda c: (-c["count"], c["cause"]))
