"""Dead letters: list (grouped by cause), inspect, redrive one or many, discard."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response

from orderflow.deadletters import queries, service
from orderflow.deadletters.queries import Filter
from orderflow.people import four_eyes
from orderflow.people.roles import Role
from orderflow.tasks.models import Task
from orderflow.web.api.schemas import BulkRedriveIn, DiscardIn
from orderflow.web.context import Admin, Context, ReadSession, Support, Viewer
from orderflow.web.openapi import READ, WRITE, errors, get_operation, link, success
from orderflow.web.params import NO_NUL, UTC_DESCRIPTION, UtcDateTime, known_id

router = APIRouter(tags=["dead letters"])

REDRIVE = "/api/v1/dead-letters/redrives/{redrive_id}"


def _text(max_length: int = 200) -> Any:
    return Query(None, max_length=max_length, pattern=NO_NUL)


@router.get("/dead-letters", responses=errors(*READ, 422))
def list_dead_letters(
    session: ReadSession,
    _: Viewer,
    step: str | None = _text(),
    cause: str | None = _text(500),  # a cause as listed: up to ~360 characters
    dependency: str | None = _text(),
    since: UtcDateTime | None = Query(None, description=UTC_DESCRIPTION),
    until: UtcDateTime | None = Query(None, description=UTC_DESCRIPTION),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    flt = Filter(step=step, cause=cause, dependency=dependency, since=since, until=until)
    groups = queries.group_counts(session, flt)
    return {
        "total": sum(g["count"] for g in groups),
        "groups": groups,
        "data": [queries.summary(t) for t in queries.matching(session, flt, limit=limit)],
    }


@router.get("/dead-letters/redrives/{redrive_id}", responses=errors(*READ, 404, 422))
def bulk_redrive_progress(redrive_id: int, session: ReadSession, _: Viewer) -> dict[str, Any]:
    return service.bulk_progress(session, known_id(redrive_id, "bulk redrive"))


@router.get("/dead-letters/{task_id}", responses=errors(*READ, 404, 422))
def show_dead_letter(task_id: int, session: ReadSession, _: Viewer) -> dict[str, Any]:
    return queries.detail(session, known_id(task_id, "dead letter"))


@router.post(
    "/dead-letters/redrive",
    responses={
        **success(200, "dry run: what would go round again"),
        **success(
            202,
            "the bulk redrive, started (Location: its progress)",
            links={
                "GetRedriveProgress": link(
                    get_operation(REDRIVE),
                    "the progress of the redrive just started",
                    redrive_id="$response.body#/id",
                )
            },
        ),
        **errors(*WRITE, 409),
    },
)
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


@router.post("/dead-letters/{task_id}/redrive", responses=errors(*WRITE, 404, 409))
def redrive_dead_letter(task_id: int, ctx: Context, who: Support) -> dict[str, Any]:
    """Support redrives non-payment work; a charge or refund is an admin's."""
    known_id(task_id, "dead letter")
    with ctx.db.transaction() as session:
        task = session.get(Task, task_id)
        if task is not None and task.kind in four_eyes.PAYMENT_STEPS:
            who.require(Role.ADMIN, f"redrive {task.kind} work")
        service.redrive(session, task_id, actor=who.actor)
    return {"id": task_id, "status": "ready"}


@router.post("/dead-letters/{task_id}/discard", responses=errors(*WRITE, 404, 409))
def discard_dead_letter(task_id: int, body: DiscardIn, ctx: Context, who: Admin) -> dict[str, Any]:
    """Give up on the work (the order takes its failure path): four-eyes."""
    known_id(task_id, "dead letter")
    with ctx.db.transaction() as session:
        four_eyes.guard(session, who, four_eyes.DISCARD)
        service.discard(session, task_id, actor=who.actor, reason=body.reason)
    return {"id": task_id, "status": "discarded"}
