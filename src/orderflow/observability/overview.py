"""The state of the system at a glance: counts, each computed by the database (GROUP BY)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, func, insert, or_, select
from sqlalchemy.orm import Session

from orderflow.alerts.models import Incident
from orderflow.audit.models import AuditEntry
from orderflow.clock import now
from orderflow.dependencies.models import Dependency, DependencyChange
from orderflow.dependencies.policy import LABELS
from orderflow.observability.buckets import Window
from orderflow.observability.models import BacklogSample
from orderflow.orders.models import Order
from orderflow.orders.status import OrderStatus
from orderflow.orders.workflow import DEPENDENCY_OF, TRACK
from orderflow.tasks.models import Task, TaskStatus

SAMPLES_KEPT = timedelta(days=2)


def _waiting(at: datetime) -> ColumnElement[bool]:
    """Order work waiting to be done: ready or running, not a periodic job, and not a shipment's
    next routine poll (that is not a backlog until it is due)."""
    return and_(
        Task.status.in_([TaskStatus.READY, TaskStatus.RUNNING]),
        Task.kind.in_(list(DEPENDENCY_OF)),
        or_(Task.kind != TRACK, Task.run_at <= at),
    )


def orders_by_status(session: Session) -> dict[str, int]:
    counts = dict(session.execute(select(Order.status, func.count()).group_by(Order.status)).all())
    return {s.value: int(counts.get(s.value, 0)) for s in OrderStatus}


def work_waiting(session: Session) -> list[dict[str, Any]]:
    """Per step: tasks waiting, how many are due now, and the age of the oldest due one."""
    at = now()
    due = and_(Task.status == TaskStatus.READY, Task.run_at <= at)
    rows = session.execute(
        select(
            Task.kind,
            func.count(),
            func.sum(case((due, 1), else_=0)),
            func.min(case((due, Task.run_at))),
        )
        .where(_waiting(at))
        .group_by(Task.kind)
        .order_by(Task.kind)
    ).all()
    return [
        {
            "step": kind,
            "dependency": DEPENDENCY_OF.get(kind),
            "waiting": int(count),
            "due": int(due_count or 0),
            "oldest_due_at": oldest.isoformat() if oldest else None,
            "oldest_due_seconds": round((at - _aware(oldest)).total_seconds(), 1)
            if oldest
            else None,
        }
        for kind, count, due_count, oldest in rows
    ]


def _aware(value: datetime) -> datetime:
    """min() over a CASE loses the column's type on some databases: naive UTC back to aware."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def open_incidents(session: Session) -> list[Incident]:
    return list(
        session.scalars(
            select(Incident).where(Incident.open_key.is_not(None)).order_by(Incident.opened_at)
        )
    )


def placed_and_delivered(session: Session, window: Window) -> list[dict[str, Any]]:
    """Orders placed and orders delivered per bucket of the window."""
    placed_bucket = window.bucket(Order.created_at)
    placed = dict(
        session.execute(
            select(placed_bucket, func.count())
            .where(Order.created_at >= window.start)
            .group_by(placed_bucket)
        ).all()
    )
    delivered_bucket = window.bucket(AuditEntry.at)
    delivered = dict(
        session.execute(
            select(delivered_bucket, func.count())
            .where(AuditEntry.to_status == OrderStatus.DELIVERED, AuditEntry.at >= window.start)
            .group_by(delivered_bucket)
        ).all()
    )
    return [
        {
            "start": start,
            "placed": int(placed.get(window.first + i, 0)),
            "delivered": int(delivered.get(window.first + i, 0)),
        }
        for i, start in enumerate(window.starts())
    ]


def sample_backlog(session: Session) -> None:
    """Record how much work waits per step now (a periodic job), and forget old samples."""
    at = now()
    counts = session.execute(
        select(Task.kind, func.count()).where(_waiting(at)).group_by(Task.kind)
    ).all()
    rows = [{"at": at, "step": kind, "waiting": int(count)} for kind, count in counts]
    if not rows:
        rows = [{"at": at, "step": "", "waiting": 0}]  # a sample of nothing waiting
    session.execute(insert(BacklogSample), rows)
    session.execute(delete(BacklogSample).where(BacklogSample.at < at - SAMPLES_KEPT))


def backlog_series(session: Session, window: Window) -> dict[str, list[int | None]]:
    """Per step, the largest backlog sampled in each bucket (None: no sample in that bucket)."""
    bucket = window.bucket(BacklogSample.at)
    rows = session.execute(
        select(bucket, BacklogSample.step, func.max(BacklogSample.waiting))
        .where(BacklogSample.at >= window.start)
        .group_by(bucket, BacklogSample.step)
    ).all()
    sampled = {int(number) - window.first for number, _, _ in rows}
    blank = [0 if i in sampled else None for i in range(window.count)]
    series: dict[str, list[int | None]] = {}
    for number, step, waiting in rows:
        index = int(number) - window.first
        if step and 0 <= index < window.count:
            series.setdefault(step, list(blank))[index] = int(waiting)
    return dict(sorted(series.items()))


def dependency_bands(session: Session, window: Window) -> list[dict[str, Any]]:
    """Per dependency, its up/down spans over the window: [{state, start, end}], oldest first."""
    at = now()
    start = window.start
    changes = session.execute(
        select(DependencyChange.name, DependencyChange.state, DependencyChange.at)
        .where(DependencyChange.at >= start)
        .order_by(DependencyChange.at, DependencyChange.id)
    ).all()
    bands = []
    for row in session.scalars(select(Dependency).order_by(Dependency.name)):
        mine = [(state, when) for name, state, when in changes if name == row.name]
        # Before the first change in the window, the state it changed from.
        state = ("closed" if mine[0][0] == "open" else "open") if mine else row.state
        spans, since = [], start
        for new_state, when in mine:
            if when > since:
                spans.append({"state": state, "start": since, "end": when})
            state, since = new_state, when
        spans.append({"state": state, "start": since, "end": at})
        bands.append({"name": row.name, "label": LABELS.get(row.name, row.name), "spans": spans})
    return bands
