"""Dead letters: list (grouped by cause), inspect, redrive one or many, discard."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Response

from orderflow.deadletters import queries, service
from orderflow.deadletters.queries import Filter
from orderflow.people import four_eyes
from orderflow.people.roles import Role
from orderflow.tasks.models import Task
from orderflow.web.api.schemas import BulkRedriveIn, DiscardIn
from orderflow.web.context import Admin, Context, ReadSession, Support, Viewer

router = APIRouter(tags=["dead letters"])


@router.get("/dead-letters")
def list_dead_letters(
    session: ReadSession,
    _: Viewer,
    step: str | None = None,
    cause: str | None = None,
    dependency: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    flt = Filter(step=step, cause=cause, dependency=dependency, since=since, until=until)
    tasks = queries.matching(session, flt)
    return {
        "total": len(tasks),
        "groups": queries.groups(tasks),
        "data": [queries.summary(t) for t in tasks[:limit]],
    }


@router.get("/dead-letters/redrives/{redrive_id}")
def bulk_redrive_progress(redrive_id: int, session: ReadSession, _: Viewer) -> dict[str, Any]:
    return service.bulk_progress(session, redrive_id)


@router.get("/dead-letters/{task_id}")
def show_dead_letter(task_id: int, session: ReadSession, _: Viewer) -> dict[str, Any]:
    return queries.detail(session, task_id)


@router.post("/dead-letters/redrive")
def bulk_redrive(
    body: BulkRedriveIn, response: Response, ctx: Context, who: Support
) -> dict[str, Any]:
    """Dry run: what would go round again. Otherwise 202 and a durable, paced redrive.

    Support may redrive work that cannot include payments (filter by a non-payment step or
    dependency); one that may include payment work is an admin's, and needs four-eyes."""
    flt = Filter(
        step=body.step,
        cause=body.cause,
        dependency=body.dependency,
        since=body.since,
        until=body.until,
    )
    if body.dry_run:
        with ctx.db.read() as session:
            return {"dry_run": True, **service.preview(session, flt)}
    with ctx.db.transaction() as session:
        if four_eyes.may_include_payment_work(flt):
            who.require(Role.ADMIN, "redrive work that may include payments (filter by step)")
            four_eyes.guard(session, who, four_eyes.BULK_REDRIVE)
        redrive_id = service.start_bulk_redrive(
            session, flt, actor=who.actor, batch=body.batch, pace_seconds=body.pace_seconds
        )
        progress = service.bulk_progress(session, redrive_id)
    response.status_code = 202
    response.headers["Location"] = f"/api/v1/dead-letters/redrives/{redrive_id}"
    return progress


@router.post("/dead-letters/{task_id}/redrive")
def redrive_dead_letter(task_id: int, ctx: Context, who: Support) -> dict[str, Any]:
    """Support redrives non-payment work; a charge or refund is an admin's."""
    with ctx.db.transaction() as session:
        task = session.get(Task, task_id)
        if task is not None and task.kind in four_eyes.PAYMENT_STEPS:
            who.require(Role.ADMIN, f"redrive {task.kind} work")
        service.redrive(session, task_id, actor=who.actor)
    return {"id": task_id, "status": "ready"}


@router.post("/dead-letters/{task_id}/discard")
def discard_dead_letter(task_id: int, body: DiscardIn, ctx: Context, who: Admin) -> dict[str, Any]:
    """Give up on the work (the order takes its failure path): four-eyes."""
    with ctx.db.transaction() as session:
        four_eyes.guard(session, who, four_eyes.DISCARD)
        service.discard(session, task_id, actor=who.actor, reason=body.reason)
    return {"id": task_id, "status": "discarded"}
