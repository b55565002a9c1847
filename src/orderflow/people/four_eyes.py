"""Four-eyes: the dangerous actions run only when a second person approves them.

The dangerous actions are a refund (cancelling an order whose card was charged), a re-send of a
lost or returned parcel (a replacement order shipped without a second charge), discarding a
dead letter (the order takes its failure path: cancelled, refunded), and a bulk redrive that
may include payment work (charges, refunds). One person proposes (stored as pending, with who
and what); another named person with the admin role approves, and only then does it run, once
(a guarded UPDATE of the pending row, in the same transaction as the action); the proposer
cannot approve their own. Named users always need the second person. Credentials that are not
a person (the bootstrap token ORDERFLOW_ADMIN_TOKEN, the CLI without --as) may act alone only
while no user exists; once one does, they may propose but never approve.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from orderflow.audit import chain
from orderflow.clock import now
from orderflow.db import Database
from orderflow.deadletters import service as deadletters
from orderflow.deadletters.queries import Filter
from orderflow.errors import Conflict, DomainError, Invalid, NotFound
from orderflow.orders import replacement
from orderflow.orders import service as orders
from orderflow.orders.models import Order, order_reference
from orderflow.orders.status import CANCELLABLE, OrderStatus
from orderflow.orders.workflow import DEPENDENCY_OF
from orderflow.people.models import Proposal
from orderflow.people.roles import Forbidden, Principal, Role
from orderflow.people.service import users_exist
from orderflow.tasks.models import Task, TaskStatus

REFUND = "refund"
RESEND = "resend"
DISCARD = "discard"
BULK_REDRIVE = "bulk_redrive"

WHAT = {
    REFUND: "cancelling a charged order (a refund)",
    RESEND: "re-sending a lost or returned parcel (a replacement order, not charged again)",
    DISCARD: "discarding a dead letter",
    BULK_REDRIVE: "a bulk redrive that may include payment work",
}
PAYMENT_STEPS = frozenset(kind for kind, dep in DEPENDENCY_OF.items() if dep == "paydesk")

PENDING, APPROVED, REJECTED, FAILED = "pending", "approved", "rejected", "failed"


class FourEyesRequired(Conflict):
    code = "four_eyes_required"


def may_include_payment_work(flt: Filter) -> bool:
    """Whether a bulk redrive with this filter could send charges or refunds round again."""
    if flt.step:
        return flt.step in PAYMENT_STEPS
    if flt.dependency:
        return flt.dependency == "paydesk"
    return True


def is_refund(session: Session, order_id: int) -> bool:
    """Cancelling this order now would send money back (its card was charged). Takes the
    order's lock, so that no charge completes between this answer and the cancellation."""
    if session.get(Order, order_id) is None:
        return False  # the cancellation answers 404
    orders.lock(session, order_id)
    return orders.charged_payment(session, order_id) is not None


def guard(session: Session, who: Principal, action: str) -> None:
    """Refuse to do `action` alone unless `who` may (not a person, and no user exists yet)."""
    if who.is_person or users_exist(session):
        raise FourEyesRequired(
            f"{WHAT[action]} needs a second person: propose it (POST /api/v1/proposals with "
            f'"action": "{action}", or `orderflow proposals propose`) and have another admin '
            "approve it"
        )


# --- what each action needs ---------------------------------------------------------------------


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RefundParams(_Params):
    order_id: int = Field(ge=1)


class ResendParams(_Params):
    order_id: int = Field(ge=1)


class DiscardParams(_Params):
    task_id: int = Field(ge=1)


class BulkRedriveParams(_Params):
    step: str | None = None
    cause: str | None = None
    dependency: str | None = None
    since: str | None = None
    until: str | None = None
    batch: int = Field(100, ge=1, le=1000)
    pace_seconds: float = Field(1.0, ge=0, le=3600)

    def filter(self) -> Filter:
        return Filter.from_dict(self.model_dump())


PARAMS: dict[str, type[_Params]] = {
    REFUND: RefundParams,
    RESEND: ResendParams,
    DISCARD: DiscardParams,
    BULK_REDRIVE: BulkRedriveParams,
}


def _params(action: str, params: dict[str, Any]) -> _Params:
    model = PARAMS.get(action)
    if model is None:
        raise Invalid(f"the action is one of {', '.join(PARAMS)}, not {action!r}", field="action")
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise Invalid(f"params.{where}: {first['msg']}", field=f"params.{where}") from None


def _target(session: Session, action: str, params: _Params) -> int | None:
    """Check the target exists and can take the action; returns its order id, if any."""
    if isinstance(params, RefundParams):
        if session.get(Order, params.order_id) is None:
            raise NotFound(f"no order with id {params.order_id}")
        status = orders.lock(session, params.order_id)
        if status not in CANCELLABLE:
            raise Conflict(f"the order is {status}: it cannot be cancelled", code="not_cancellable")
        replacement.refuse_refund_if_replaced(session, params.order_id)
        return params.order_id
    if isinstance(params, ResendParams):
        existing = replacement.check(session, params.order_id)
        if existing is not None:
            raise Conflict(
                f"the order was already re-sent as {order_reference(existing)}",
                code="already_resent",
                details={"replacement": order_reference(existing)},
            )
        return params.order_id
    if isinstance(params, DiscardParams):
        task = session.get(Task, params.task_id)
        if task is None or task.status != TaskStatus.DEAD:
            raise NotFound(f"no dead letter with id {params.task_id}")
        return task.order_id
    assert isinstance(params, BulkRedriveParams)
    if not deadletters.preview(session, params.filter())["would_redrive"]:
        raise Conflict("no dead letter matches this filter", code="nothing_to_redrive")
    return None


def _record(session: Session, proposal: Proposal, actor: str, event: str, **extra: Any) -> None:
    if proposal.order_id is None:
        return
    details = {
        "proposal": proposal.id,
        "action": proposal.action,
        "params": proposal.params,
        "reason": proposal.reason,
        "proposed_by": proposal.proposed_by,
        **extra,
    }
    chain.record(
        session, proposal.order_id, actor=actor, action=f"four_eyes.{event}", details=details
    )


# --- propose, approve, reject ---------------------------------------------------------------


def propose(
    session: Session, who: Principal, action: str, params: dict[str, Any], reason: str
) -> Proposal:
    who.require(Role.ADMIN, "propose this")
    checked = _params(action, params)
    reason = reason.strip()
    if not reason:
        raise Invalid("a reason is required", field="reason")
    order_id = _target(session, action, checked)
    stored = checked.model_dump(exclude_defaults=action != BULK_REDRIVE)
    for pending in session.scalars(
        select(Proposal).where(Proposal.status == PENDING, Proposal.action == action)
    ):
        if action != BULK_REDRIVE and pending.params == stored:
            raise Conflict(f"this is already proposed (#{pending.id})", code="already_proposed")
    proposal = Proposal(
        action=action,
        params=stored,
        order_id=order_id,
        reason=reason,
        status=PENDING,
        proposed_by=who.actor,
    )
    session.add(proposal)
    session.flush()
    _record(session, proposal, who.actor, "proposed")
    return proposal


def _pending(session: Session, proposal_id: int) -> Proposal:
    proposal = session.get(Proposal, proposal_id)
    if proposal is None:
        raise NotFound(f"no proposal {proposal_id}")
    if proposal.status != PENDING:
        raise Conflict(f"proposal {proposal_id} is {proposal.status}", code="not_pending")
    return proposal


def _decide(session: Session, proposal: Proposal, who: Principal, status: str) -> None:
    """Pending → decided, once: of two concurrent decisions, one finds nothing to update."""
    decided = session.execute(
        update(Proposal)
        .where(Proposal.id == proposal.id, Proposal.status == PENDING)
        .values(status=status, decided_by=who.actor, decided_at=now())
        .returning(Proposal.id)
    ).first()
    if decided is None:
        raise Conflict(f"proposal {proposal.id} was decided meanwhile", code="not_pending")
    session.refresh(proposal)


def approve(session: Session, who: Principal, proposal_id: int) -> Proposal:
    """The second person approves: the action runs now, in this transaction, with their name."""
    who.require(Role.ADMIN, "approve proposals")
    if not who.is_person:
        raise Forbidden(
            "only a named user can approve (not the bootstrap token, nor the CLI without --as)"
        )
    proposal = _pending(session, proposal_id)
    if proposal.proposed_by == who.actor:
        raise Forbidden("you proposed this: another person must approve it")
    _decide(session, proposal, who, APPROVED)
    four_eyes = {
        "proposal": proposal.id,
        "proposed_by": proposal.proposed_by,
        "approved_by": who.actor,
    }
    _record(session, proposal, who.actor, "approved", approved_by=who.actor)
    params = _params(proposal.action, proposal.params)
    outcome: dict[str, Any] = {}
    if isinstance(params, RefundParams):
        replacement.refuse_refund_if_replaced(session, params.order_id)
        orders.cancel_order(session, params.order_id, actor=who.actor, reason=proposal.reason)
        outcome = {"order_status": OrderStatus.CANCELLED.value}
    elif isinstance(params, ResendParams):
        new_id, created = replacement.resend(
            session, params.order_id, actor=who.actor, reason=proposal.reason
        )
        ref = order_reference(new_id)
        outcome = {"replacement_id": new_id, "replacement": ref, "created": created}
    elif isinstance(params, DiscardParams):
        deadletters.discard(session, params.task_id, actor=who.actor, reason=proposal.reason)
        outcome = {"task_status": "discarded"}
    else:
        assert isinstance(params, BulkRedriveParams)
        redrive_id = deadletters.start_bulk_redrive(
            session,
            params.filter(),
            actor=who.actor,
            batch=params.batch,
            pace_seconds=params.pace_seconds,
            four_eyes=four_eyes,
        )
        outcome = {"redrive_id": redrive_id}
    proposal.outcome = outcome
    session.flush()
    return proposal


def reject(session: Session, who: Principal, proposal_id: int, note: str = "") -> Proposal:
    """Another admin turns it down, or the proposer withdraws it; nothing runs."""
    who.require(Role.ADMIN, "reject proposals")
    proposal = _pending(session, proposal_id)
    _decide(session, proposal, who, REJECTED)
    proposal.outcome = {"note": note} if note else None
    _record(session, proposal, who.actor, "rejected", rejected_by=who.actor, note=note or None)
    return proposal


def approve_and_run(db: Database, who: Principal, proposal_id: int) -> dict[str, Any]:
    """Entry points' approval: if the action is refused now (the order moved on, say), the
    proposal is closed as failed with the reason, and the refusal raised."""
    try:
        with db.transaction() as session:
            return view(approve(session, who, proposal_id))
    except (Forbidden, NotFound):
        raise
    except DomainError as exc:
        if exc.code == "not_pending":
            raise
        with db.transaction() as session:
            session.execute(
                update(Proposal)
                .where(Proposal.id == proposal_id, Proposal.status == PENDING)
                .values(
                    status=FAILED,
                    decided_by=who.actor,
                    decided_at=now(),
                    outcome={"error": exc.code, "message": exc.message},
                )
            )
        raise


# --- reading ------------------------------------------------------------------------------------


def view(p: Proposal) -> dict[str, Any]:
    return {
        "id": p.id,
        "action": p.action,
        "params": p.params,
        "order_id": p.order_id,
        "reason": p.reason,
        "status": p.status,
        "proposed_by": p.proposed_by,
        "proposed_at": p.proposed_at.isoformat(),
        "decided_by": p.decided_by,
        "decided_at": p.decided_at.isoformat() if p.decided_at else None,
        "outcome": p.outcome,
    }


def listing(
    session: Session, *, status: str | None = PENDING, order_id: int | None = None
) -> list[dict[str, Any]]:
    query = select(Proposal).order_by(Proposal.id.desc()).limit(500)
    if status:
        query = query.where(Proposal.status == status)
    if order_id is not None:
        query = query.where(Proposal.order_id == order_id)
    return [view(p) for p in session.scalars(query)]


def get(session: Session, proposal_id: int) -> dict[str, Any]:
    proposal = session.get(Proposal, proposal_id)
    if proposal is None:
        raise NotFound(f"no proposal {proposal_id}")
    return view(proposal)
