"""Acting on dead letters: redrive one, discard one (the order takes its failure path), and
start a bulk redrive, which is itself durable, paced work (see `steps.RedriveStep`)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from orderflow.audit import chain
from orderflow.deadletters.queries import (
    Filter,
    cause_of,
    count_and_last,
    group_counts,
    ids,
)
from orderflow.errors import Conflict, Invalid, NotFound
from orderflow.orders import service
from orderflow.orders.status import CANCELLABLE, OrderStatus
from orderflow.tasks import queue
from orderflow.tasks.models import Task, TaskStatus

REDRIVE = "redrive"


def _dead(session: Session, task_id: int) -> Task:
    task = session.get(Task, task_id)
    if task is None:
        raise NotFound(f"no dead letter with id {task_id}")
    if task.status != TaskStatus.DEAD:
        raise Conflict(f"task {task_id} is {task.status}, not a dead letter", code="not_dead")
    return task


def redrive(
    session: Session, task_id: int, *, actor: str, four_eyes: dict[str, Any] | None = None
) -> None:
    """`four_eyes`: who proposed and who approved it, when it was (kept in the history)."""
    task = _dead(session, task_id)
    if task.order_id is not None:
        service.lock(session, task.order_id)
        details = {"step": task.kind, "task_id": task.id, "cause": cause_of(task)}
        chain.record(
            session,
            task.order_id,
            actor=actor,
            action="work.redriven",
            details={**details, "four_eyes": four_eyes} if four_eyes else details,
        )
    if not queue.redrive(session, task_id):
        raise Conflict(f"dead letter {task_id} changed meanwhile; look again", code="not_dead")


def discard(session: Session, task_id: int, *, actor: str, reason: str) -> None:
    """Give up on the work; the order takes its failure path (refund, stock back, e-mail)."""
    if not reason.strip():
        raise Invalid("a reason is required to discard a dead letter", field="reason")
    task = _dead(session, task_id)
    if not queue.discard(session, task_id):
        raise Conflict(f"dead letter {task_id} changed meanwhile; look again", code="not_dead")
    if task.order_id is None:
        return
    order_id = task.order_id
    status = service.lock(session, order_id)
    chain.record(
        session,
        order_id,
        actor=actor,
        action="work.discarded",
        details={"step": task.kind, "task_id": task.id, "cause": cause_of(task), "reason": reason},
    )
    why = f"{task.kind} given up: {reason}"
    if status in CANCELLABLE:
        service.cancel_order(session, order_id, actor=actor, reason=why)
    elif status == OrderStatus.SHIPPED:
        service.move(
            session,
            order_id,
            OrderStatus.DELIVERY_FAILED,
            actor=actor,
            action="order.delivery_failed",
            details={"reason": why},
        )
    # Terminal orders (a failed e-mail after delivery, say) have no further path.


def preview(session: Session, flt: Filter) -> dict[str, Any]:
    """The dry run of a bulk redrive: what would go round again."""
    count, _ = count_and_last(session, flt)
    return {
        "would_redrive": count,
        "groups": group_counts(session, flt),
        "task_ids": ids(session, flt, limit=1000),
    }


def start_bulk_redrive(
    session: Session,
    flt: Filter,
    *,
    actor: str,
    batch: int = 100,
    pace_seconds: float = 1.0,
    four_eyes: dict[str, Any] | None = None,
) -> int:
    """Queue a durable bulk redrive of what matches now; returns its id (a task id)."""
    total, last_id = count_and_last(session, flt)
    if not total:
        raise Conflict("no dead letter matches this filter", code="nothing_to_redrive")
    key = f"redrive:{uuid.uuid4().hex}"
    queue.enqueue(
        session,
        REDRIVE,
        key,
        payload={
            "filter": flt.as_dict(),
            "actor": actor,
            "up_to_id": last_id,  # what matches later is not part of this redrive
            "after_id": 0,
            "total": total,
            "redriven": 0,
            "batch": batch,
            "pace_seconds": pace_seconds,
            "four_eyes": four_eyes,
        },
    )
    return int(session.execute(select(Task.id).where(Task.key == key)).scalar_one())


def bulk_progress(session: Session, redrive_id: int) -> dict[str, Any]:
    task = session.get(Task, redrive_id)
    if task is None or task.kind != REDRIVE:
        raise NotFound(f"no bulk redrive with id {redrive_id}")
    p = task.payload
    return {
        "id": task.id,
        "status": "finished"
        if task.status == TaskStatus.DONE
        else ("failed" if task.status == TaskStatus.DEAD else "running"),
        "filter": p["filter"],
        "total": p["total"],
        "redriven": p["redriven"],
        "started_by": p["actor"],
        "four_eyes": p.get("four_eyes"),
        "created_at": task.created_at.isoformat(),
        "finished_at": task.finished_at.isoformat() if task.finished_at else None,
    }
