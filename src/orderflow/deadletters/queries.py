"""Reading dead letters: filtered lists, groups by cause (like ServicePulse's failure groups)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

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
    return task.cause or fingerprint(task.kind, task.error_class, task.last_error)


AnySelect = TypeVar("AnySelect", bound="Select[*tuple[Any, ...]]")


def _where(query: AnySelect, flt: Filter) -> AnySelect:
    query = query.where(Task.status == TaskStatus.DEAD)
    if flt.cause:
        query = query.where(Task.cause == flt.cause)
    if flt.step:
        query = query.where(Task.kind == flt.step)
    if flt.dependency:
        kinds = [k for k, dep in DEPENDENCY_OF.items() if dep == flt.dependency]
        query = query.where(Task.kind.in_(kinds))
    if flt.since:
        query = query.where(Task.last_failed_at >= flt.since)
    if flt.until:
        query = query.where(Task.last_failed_at < flt.until)
    return query


def matching(
    session: Session, flt: Filter, *, after_id: int | None = None, limit: int | None = None
) -> list[Task]:
    """Dead letters matching the filter, oldest first (the cause is a stored column)."""
    query = _where(select(Task), flt).order_by(Task.id)
    if after_id is not None:
        query = query.where(Task.id > after_id)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def ids(session: Session, flt: Filter, *, limit: int) -> list[int]:
    """The ids of the first `limit` dead letters matching, oldest first."""
    query = _where(select(Task.id), flt).order_by(Task.id).limit(limit)
    return list(session.scalars(query))


def page(
    session: Session, flt: Filter, *, after_id: int | None = None, limit: int = 50
) -> tuple[list[Task], int | None]:
    """One page of dead letters, oldest first (keyset); the cursor of the next page, if any."""
    tasks = matching(session, flt, after_id=after_id, limit=limit + 1)
    return tasks[:limit], tasks[limit - 1].id if len(tasks) > limit else None


def group_counts(session: Session, flt: Filter) -> list[dict[str, Any]]:
    """Dead letters by cause, counted by the database: count, oldest and newest failure."""
    query = _where(
        select(
            Task.cause,
            Task.kind,
            Task.error_class,
            func.count(),
            func.min(Task.last_failed_at),
            func.max(Task.last_failed_at),
        ),
        flt,
    ).group_by(Task.cause, Task.kind, Task.error_class)
    result = [
        {
            "cause": cause,
            "step": kind,
            "error_class": error_class,
            "count": count,
            "oldest": _iso(oldest),
            "newest": _iso(newest),
        }
        for cause, kind, error_class, count, oldest, newest in session.execute(query)
    ]
    return sorted(result, key=lambda g: (-int(g["count"]), str(g["cause"])))


def count_and_last(session: Session, flt: Filter) -> tuple[int, int | None]:
    """How many dead letters match, and the id of the newest (a bulk redrive's upper bound)."""
    count, last = session.execute(_where(select(func.count(), func.max(Task.id)), flt)).one()
    return int(count), last


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


def of_order(session: Session, order_id: int) -> list[dict[str, Any]]:
    """The order's dead letters (for links from its page)."""
    query = (
        select(Task)
        .where(Task.order_id == order_id, Task.status == TaskStatus.DEAD)
        .order_by(Task.id)
    )
    return [summary(t) for t in session.scalars(query)]


def cause_counts(session: Session) -> list[dict[str, Any]]:
    """Dead letters by cause (stored on each when it died), counted by the database."""
    return group_counts(session, Filter())
