"""Four-eyes proposals: propose a dangerous action, list, approve (it runs), reject."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from orderflow.people import four_eyes
from orderflow.web.context import Admin, Context, ReadSession, Viewer
from orderflow.web.openapi import READ, WRITE, errors
from orderflow.web.params import MAX_ID, NO_NUL, known_id

router = APIRouter(tags=["four-eyes"])

Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class ProposalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(description="refund | resend | discard | bulk_redrive")
    params: dict[str, Any] = Field(
        description='refund, resend: {"order_id"}; discard: {"task_id"}; bulk_redrive: the filter '
        '({"step", "cause", "dependency", "since", "until"}) and "batch", "pace_seconds"'
    )
    reason: Annotated[Reason, StringConstraints(pattern=NO_NUL)]


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Annotated[str, StringConstraints(max_length=500, pattern=NO_NUL)] = ""


@router.post("/proposals", status_code=201, responses=errors(*WRITE, 404, 409))
def propose(body: ProposalIn, ctx: Context, who: Admin) -> dict[str, Any]:
    """Store the action as pending; another admin must approve it before it runs."""
    with ctx.db.transaction() as session:
        return four_eyes.view(
            four_eyes.propose(session, who, body.action, body.params, body.reason)
        )


@router.get("/proposals", responses=errors(*READ, 422))
def list_proposals(
    session: ReadSession,
    _: Viewer,
    status: str | None = Query("pending", pattern="^(pending|approved|rejected|failed|all)$"),
    order_id: int | None = Query(None, ge=1, le=MAX_ID),
) -> dict[str, Any]:
    chosen = None if status == "all" else status
    return {"data": four_eyes.listing(session, status=chosen, order_id=order_id)}


@router.get("/proposals/{proposal_id}", responses=errors(*READ, 404, 422))
def show_proposal(proposal_id: int, session: ReadSession, _: Viewer) -> dict[str, Any]:
    return four_eyes.get(session, known_id(proposal_id, "proposal"))


@router.post("/proposals/{proposal_id}/approve", responses=errors(*WRITE, 404, 409))
def approve(proposal_id: int, ctx: Context, who: Admin) -> dict[str, Any]:
    """A second person (not the proposer) approves: the action runs now, once."""
    return four_eyes.approve_and_run(ctx.db, who, known_id(proposal_id, "proposal"))


@router.post("/proposals/{proposal_id}/reject", responses=errors(*WRITE, 404, 409))
def reject(
    proposal_id: int, ctx: Context, who: Admin, body: RejectIn | None = None
) -> dict[str, Any]:
    known_id(proposal_id, "proposal")
    with ctx.db.transaction() as session:
        return four_eyes.view(
            four_eyes.reject(session, who, proposal_id, body.note if body else "")
        )
