"""The durable task table's lifecycle: enqueue, claim with a lease, finish, retry, bury.

Every call takes a session and never commits: the caller's transaction decides. Each change
of a claimed task is guarded by its lease token, so a worker that lost its lease (it was too
slow, or presumed dead) can never overwrite the work of the worker that took over.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, Table, and_, func, select, union_all, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from orderflow import bulk, deferred
from orderflow.clock import now
from orderflow.db import insert_ignore
from orderflow.deadletters.causes import fingerprint
from orderflow.tasks.errors import ErrorClass
from orderflow.tasks.models import Priority, Task, TaskAttempt, TaskStatus

PERFORMED = "performed_at"  # payload key set by mark_performed
# Payload keys kept by `retry`: how many attempts have a recorded outcome, and whether one of
# them failed in a way that may still have reached the outside world.
RECORDED, UNCERTAIN = "recorded_attempts", "uncertain"


@dataclass(frozen=True)
class ClaimedTask:
    id: int
    key: str
    kind: str
    order_id: int | None
    payload: dict[str, Any]
    attempts: int  # including this one
    lease_token: str
    created_at: datetime | None = None
    priority: int = Priority.INTERACTIVE


# The priority of the work being done: what it queues next inherits it (see `inheriting`).
_priority: ContextVar[int] = ContextVar("orderflow_priority", default=Priority.INTERACTIVE)


@contextmanager
def inheriting(priority: int) -> Iterator[None]:
    """Tasks queued inside take `priority`: an order's work keeps its intake's priority."""
    token = _priority.set(priority)
    try:
        yield
    finally:
        _priority.reset(token)


def enqueue(
    session: Session,
    kind: str,
    key: str,
    *,
    order_id: int | None = None,
    payload: dict[str, Any] | None = None,
    run_at: datetime | None = None,
) -> None:
    """Queue work once: a second enqueue of the same key is a no-op."""
    values = {
        "key": key,
        "kind": kind,
        "order_id": order_id,
        "payload": payload or {},
        "status": TaskStatus.READY,
        "run_at": run_at or now(),
        "attempts": 0,
        "priority": _priority.get(),
        "created_at": now(),
        "finished_at": None,
    }
    batch = deferred.current()
    if batch is not None:  # written with the batch's other new tasks, in one statement
        batch.new_tasks.setdefault(key, values)
        return
    insert_ignore(session, Task, values, "key")


CLAIMED_COLUMNS = (
    Task.id,
    Task.key,
    Task.kind,
    Task.order_id,
    Task.payload,
    Task.attempts,
    Task.created_at,
    Task.priority,
)


def claim(
    session: Session,
    *,
    token: str,
    limit: int,
    lease_seconds: float,
    kinds: Collection[str] | None = None,
) -> list[ClaimedTask]:
    """Take up to `limit` tasks in one statement: first any whose lease expired (their
    worker died), then due ones, interactive before bulk, oldest due first.

    `kinds` restricts the claim to some steps (those of one dependency or lane). Each part
    reads `ix_tasks_claim` in its own order and stops after `limit` rows: one query with an
    OR of both would sort every due task, thousands of them during a burst.
    """
    at = now()

    def only_kinds(query: Select[Any]) -> Select[Any]:
        return query if kinds is None else query.where(Task.kind.in_(kinds))

    expired = only_kinds(
        select(Task.id).where(Task.status == TaskStatus.RUNNING, Task.lease_until < at)
    )
    due = only_kinds(select(Task.id).where(Task.status == TaskStatus.READY, Task.run_at <= at))
    # FOR UPDATE SKIP LOCKED on PostgreSQL; on SQLite the write lock serializes claims.
    parts = [
        part.limit(limit).with_for_update(skip_locked=True).cte(name)
        for name, part in (
            ("expired", expired),
            ("due", due.order_by(Task.priority, Task.run_at)),
        )
    ]
    chosen = union_all(*(select(part.c.id) for part in parts)).limit(limit)
    rows = session.execute(
        update(Task)
        .where(Task.id.in_(select(chosen.subquery().c.id)))
        .values(
            status=TaskStatus.RUNNING,
            lease_owner=token,
            lease_until=at + timedelta(seconds=lease_seconds),
            attempts=Task.attempts + 1,
        )
        .returning(*CLAIMED_COLUMNS)
    ).all()
    claimed = [
        ClaimedTask(
            id=r.id,
            key=r.key,
            kind=r.kind,
            order_id=r.order_id,
            payload=r.payload,
            attempts=r.attempts,
            lease_token=token,
            created_at=r.created_at,
            priority=r.priority,
        )
        for r in rows
    ]
    return sorted(claimed, key=lambda t: t.id)


def _owned(task: ClaimedTask) -> Any:
    return and_(
        Task.id == task.id,
        Task.status == TaskStatus.RUNNING,
        Task.lease_owner == task.lease_token,
    )


def _guarded(session: Session, task: ClaimedTask, **values: Any) -> bool:
    result = session.execute(update(Task).where(_owned(task)).values(**values))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def owned(session: Session, tasks: Collection[ClaimedTask]) -> set[int]:
    """Lock the claimed tasks still held under their lease; the ids of those still ours.

    Once locked they stay ours until the transaction ends, so a deferred batch can finish
    them without checking each one again."""
    if not tasks:
        return set()
    tokens = {t.lease_token for t in tasks}
    rows = session.execute(
        select(Task.id, Task.lease_owner)
        .where(
            Task.id.in_([t.id for t in tasks]),
            Task.status == TaskStatus.RUNNING,
            Task.lease_owner.in_(tokens),
        )
        .order_by(Task.id)
        .with_for_update()
    ).all()
    by_id = {t.id: t.lease_token for t in tasks}
    return {r.id for r in rows if by_id.get(r.id) == r.lease_owner}


def finish(session: Session, task: ClaimedTask) -> bool:
    """Mark done. False if the lease was lost: the caller must then discard its results."""
    batch = deferred.current()
    if batch is not None:  # the batch locked it with `owned`: still ours
        batch.finished.append(task.id)
        return True
    return _guarded(
        session,
        task,
        status=TaskStatus.DONE,
        finished_at=now(),
        lease_owner=None,
        lease_until=None,
    )


def reschedule(session: Session, task: ClaimedTask, run_at: datetime) -> bool:
    """Done for now, due again at `run_at` (recurring work such as polling); not a failure."""
    return _guarded(
        session,
        task,
        status=TaskStatus.READY,
        run_at=run_at,
        attempts=0,
        lease_owner=None,
        lease_until=None,
    )


def may_have_happened(task: ClaimedTask) -> bool:
    """Whether an earlier attempt may have reached the outside world: one failed ambiguously
    (a timeout, a 502), or one never recorded its outcome (its worker died mid-call)."""
    recorded = int(task.payload.get(RECORDED, 0))
    return bool(task.payload.get(UNCERTAIN)) or task.attempts - 1 > recorded


def retry(
    session: Session,
    task: ClaimedTask,
    *,
    delay: float,
    error: str,
    uncertain: bool = True,
    spent: bool = True,
) -> bool:
    """Due again after `delay`. `uncertain`: this attempt may have had its effect. `spent`:
    False when the attempt found its dependency down — waiting spends no attempts (the
    attempt record still says it happened)."""
    at = now()
    attempts = task.attempts if spent else task.attempts - 1
    payload = {
        **task.payload,
        RECORDED: attempts,
        UNCERTAIN: uncertain or may_have_happened(task),
    }
    return _guarded(
        session,
        task,
        attempts=attempts,
        payload=payload,
        status=TaskStatus.READY,
        run_at=at + timedelta(seconds=delay),
        error_class=ErrorClass.TRANSIENT,
        last_error=error,
        first_failed_at=_first_failed(task, at),
        last_failed_at=at,
        lease_owner=None,
        lease_until=None,
    )


def bury(session: Session, task: ClaimedTask, *, error_class: ErrorClass, error: str) -> bool:
    """Make it a dead letter: kept with its evidence until a person redrives or discards it."""
    at = now()
    return _guarded(
        session,
        task,
        status=TaskStatus.DEAD,
        error_class=error_class,
        last_error=error,
        cause=fingerprint(task.kind, error_class, error),
        first_failed_at=_first_failed(task, at),
        last_failed_at=at,
        finished_at=at,
        lease_owner=None,
        lease_until=None,
    )


_MARK_SQL = {  # as `_owned`: ours while it runs under our lease
    "postgresql": "UPDATE tasks SET payload = %(payload)s::json WHERE id = %(id)s"
    " AND status = 'running' AND lease_owner = %(owner)s",
    "sqlite": "UPDATE tasks SET payload = :payload WHERE id = :id"
    " AND status = 'running' AND lease_owner = :owner",
}


def mark_performed(connection: Connection, task: ClaimedTask) -> str:
    """Note on the task that its outside effect happened (for effects without an idempotency
    key, such as an e-mail); returns the time noted. Committed on its own the moment the
    effect happened, never with the batch (see `Worker._marked_effect`).

    Written even if our lease was lost meanwhile: whoever holds the task must not repeat it."""
    at = now().isoformat()
    payload = json.dumps({**task.payload, PERFORMED: at})
    sql = _MARK_SQL[connection.dialect.name]  # plain SQL: one per e-mail, on the hot path
    marked = connection.exec_driver_sql(
        sql, {"payload": payload, "id": task.id, "owner": task.lease_token}
    ).rowcount
    if marked == 0:  # taken over: merge into the payload as it is now (rare)
        current = connection.execute(select(Task.payload).where(Task.id == task.id)).scalar()
        if current is not None and PERFORMED not in current:
            connection.execute(
                update(Task).where(Task.id == task.id).values(payload={**current, PERFORMED: at})
            )
    return at


def performed(task: ClaimedTask) -> bool:
    """Whether an earlier attempt at this task already performed its outside effect."""
    return PERFORMED in task.payload


def flush_deferred(session: Session, batch: deferred.Deferred) -> None:
    """Write what a deferred batch queued and finished: one statement each."""
    table = Task.__table__
    assert isinstance(table, Table)
    if batch.new_tasks:
        bulk.insert_ignoring(session, table, list(batch.new_tasks.values()), "key", returning=False)
        batch.new_tasks.clear()
    if batch.finished:
        session.execute(
            update(Task)
            .where(Task.id.in_(batch.finished))
            .values(status=TaskStatus.DONE, finished_at=now(), lease_owner=None, lease_until=None)
        )
        batch.finished.clear()
    if batch.postponed:
        rows = [{"key": k, "run_at": at} for k, at in sorted(batch.postponed.items())]
        bulk.update_by_key(session, table, rows, "key", status=TaskStatus.READY)
        batch.postponed.clear()
    if batch.cancelled:
        session.execute(
            update(Task)
            .where(Task.key.in_(sorted(batch.cancelled)), Task.status == TaskStatus.READY)
            .values(status=TaskStatus.DONE, finished_at=now())
        )
        batch.cancelled.clear()


def _first_failed(task: ClaimedTask, at: datetime) -> Any:
    return func.coalesce(Task.first_failed_at, at)


def record_attempt(
    session: Session,
    task: ClaimedTask,
    *,
    worker: str,
    started_at: datetime,
    finished_at: datetime,
    outcome: str,
    http_status: int | None = None,
    error: str | None = None,
) -> None:
    deferred.add(  # evidence nothing reads back in the batch: one INSERT with its others
        session,
        TaskAttempt,
        {
            "task_id": task.id,
            "attempt": task.attempts,
            "worker": worker,
            "started_at": started_at,
            "finished_at": finished_at,
            "outcome": outcome,
            "http_status": http_status,
            "error": error,
        },
    )


def postpone_ready(session: Session, key: str, run_at: datetime) -> None:
    """Move a waiting task's due time (e.g. a tracking poll, when a webhook made it needless)."""
    batch = deferred.current()
    if batch is not None and key in batch.new_tasks:  # queued by this batch, not yet written
        batch.new_tasks[key]["run_at"] = run_at
        return
    if batch is not None:
        if key not in batch.cancelled:
            batch.postponed[key] = run_at
        return
    session.execute(
        update(Task).where(Task.key == key, Task.status == TaskStatus.READY).values(run_at=run_at)
    )


def cancel_ready(session: Session, key: str) -> None:
    """A waiting task that is no longer needed is done (e.g. polling a delivered parcel)."""
    batch = deferred.current()
    if batch is not None and key in batch.new_tasks:  # queued by this batch, not yet written
        batch.new_tasks[key].update(status=TaskStatus.DONE, finished_at=now())
        return
    if batch is not None:
        batch.postponed.pop(key, None)
        batch.cancelled.add(key)
        return
    session.execute(
        update(Task)
        .where(Task.key == key, Task.status == TaskStatus.READY)
        .values(status=TaskStatus.DONE, finished_at=now())
    )


def redrive(session: Session, task_id: int) -> bool:
    """A dead letter goes round again, due now. Its attempts count on (reconciliation relies
    on knowing an earlier attempt may have reached the outside world) and its evidence stays."""
    result = session.execute(
        update(Task)
        .where(Task.id == task_id, Task.status == TaskStatus.DEAD)
        .values(status=TaskStatus.READY, run_at=now(), finished_at=None)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def discard(session: Session, task_id: int) -> bool:
    result = session.execute(
        update(Task)
        .where(Task.id == task_id, Task.status == TaskStatus.DEAD)
        .values(status=TaskStatus.DISCARDED, finished_at=now())
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
