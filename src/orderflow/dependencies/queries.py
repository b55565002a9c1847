"""What operators see of each dependency, and what an order is waiting for."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from orderflow.clock import now
from orderflow.dependencies import health
from orderflow.dependencies.models import Dependency, DependencyChange
from orderflow.dependencies.policy import LABELS
from orderflow.orders.workflow import DEPENDENCY_OF, TRACK
from orderflow.tasks.models import Task, TaskStatus


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def kinds_of(dependency: str) -> list[str]:
    return [kind for kind, dep in DEPENDENCY_OF.items() if dep == dependency]


def backlog_of(dependency: str, at: datetime) -> ColumnElement[bool]:
    """The backlog: work for this dependency that is due or waiting to be retried
    (a shipment's next routine poll is not a backlog)."""
    return and_(
        Task.kind.in_(kinds_of(dependency)),
        Task.status.in_([TaskStatus.READY, TaskStatus.RUNNING]),
        or_(Task.kind != TRACK, Task.run_at <= at),
    )


def dependencies_view(
    session: Session, rates: dict[str, float | None] | None = None
) -> list[dict[str, Any]]:
    """Each dependency's breaker, pace (given the configured rates) and backlog."""
    at = now()
    views = []
    for row in health.snapshot(session):
        rate = (rates or {}).get(row.name)
        count, oldest = session.execute(
            select(func.count(), func.min(Task.created_at)).where(backlog_of(row.name, at))
        ).one()
        views.append(
            {
                "name": row.name,
                "label": LABELS.get(row.name, row.name),
                "state": row.state,
                "since": _iso(row.state_since),
                "consecutive_failures": row.consecutive_failures,
                "rate_per_second": None if rate is None else round(rate * row.rate_factor, 2),
                "last_error": row.last_error,
                "last_failure_at": _iso(row.last_failure_at),
                "last_success_at": _iso(row.last_success_at),
                "next_probe_at": _iso(row.next_probe_at) if row.state == health.OPEN else None,
                "backlog": {
                    "tasks": count,
                    "oldest_at": _iso(oldest),
                    "oldest_age_seconds": round((at - oldest).total_seconds(), 1)
                    if oldest
                    else None,
                },
            }
        )
    return views


def waiting_for(dependency: Dependency | None) -> dict[str, Any] | None:
    """'waiting for Bob's Post since 02:13, next probe 02:18', when its breaker is open."""
    if dependency is None or dependency.state != health.OPEN:
        return None
    label = LABELS.get(dependency.name, dependency.name)
    since, probe = dependency.state_since, dependency.next_probe_at
    message = f"waiting for {label} since {since:%Y-%m-%d %H:%M:%S} UTC"
    if probe is not None:
        message += f", next probe {probe:%H:%M:%S}"
    return {
        "dependency": dependency.name,
        "label": label,
        "since": _iso(since),
        "next_probe_at": _iso(probe),
        "last_error": dependency.last_error,
        "message": message,
    }


def outages(session: Session) -> list[dict[str, Any]]:
    """The dependencies that are down now, each with the orders waiting for it (for the console's
    banner: one query on the small dependencies table, one indexed count per outage)."""
    views = []
    for row in session.scalars(select(Dependency).where(Dependency.state == health.OPEN)):
        waiting = session.scalar(
            select(func.count(func.distinct(Task.order_id))).where(backlog_of(row.name, now()))
        )
        views.append(
            {
                "name": row.name,
                "label": LABELS.get(row.name, row.name),
                "since": _iso(row.state_since),
                "next_probe_at": _iso(row.next_probe_at),
                "last_error": row.last_error,
                "waiting": int(waiting or 0),
            }
        )
    return views


def history(session: Session, limit: int = 20) -> dict[str, list[dict[str, Any]]]:
    """Each dependency's latest state changes, newest first (`limit` each)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for row in health.snapshot(session):
        changes = session.scalars(
            select(DependencyChange)
            .where(DependencyChange.name == row.name)
            .order_by(DependencyChange.at.desc(), DependencyChange.id.desc())
            .limit(limit)
        )
        found[row.name] = [{"state": c.state, "at": _iso(c.at), "error": c.error} for c in changes]
    return found
