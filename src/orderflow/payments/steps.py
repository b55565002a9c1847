"""The charge and refund steps: Paydesk calls keyed by order, and what follows from them."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from orderflow import deferred
from orderflow.audit import chain
from orderflow.catalog.models import Customer
from orderflow.clock import now
from orderflow.orders import service, workflow
from orderflow.orders.models import Order
from orderflow.orders.status import OrderStatus
from orderflow.payments.models import Payment
from orderflow.payments.paydesk import Charged, Declined, PaydeskClient, Refunded
from orderflow.tasks import queue
from orderflow.tasks.queue import ClaimedTask

ACTOR = "worker:payments"


def _record(
    session: Session,
    order_id: int,
    kind: str,
    status: str,
    provider_id: str | None,
    amount: int,
    currency: str,
    *,
    decline_code: str | None = None,
) -> None:
    """A payment row; in a worker's batch it is written with the batch's others."""
    values = {
        "order_id": order_id,
        "kind": kind,
        "status": status,
        "provider_id": provider_id,
        "amount": amount,
        "currency": currency,
        "decline_code": decline_code,
        "created_at": now(),
    }
    deferred.add(session, Payment, values)


@dataclass(frozen=True)
class ChargeWork:
    idempotency_key: str
    order_reference: str
    customer_reference: str
    amount: int
    currency: str
    payment_method: str
    # The order was cancelled after an earlier attempt that may have charged: only look.
    reconcile_only: bool


class ChargeStep:
    kind = workflow.CHARGE
    dependency = workflow.DEPENDENCY_OF[kind]

    def __init__(self, paydesk: PaydeskClient) -> None:
        self.paydesk = paydesk

    def prepare(self, session: Session, task: ClaimedTask) -> ChargeWork | None:
        order = session.get(Order, task.order_id)
        if order is None or any(p.kind == "charge" for p in order.payments):
            return None  # already settled (a repeat after a crash between commit and ack)
        cancelled_first = order.status != OrderStatus.PLACED
        if cancelled_first and not queue.may_have_happened(task):
            return None  # no earlier attempt can have reached Paydesk
        customer = session.get(Customer, order.customer_id)
        assert customer is not None
        return ChargeWork(
            idempotency_key=task.key,
            order_reference=order.reference,
            customer_reference=customer.reference,
            amount=order.total,
            currency=order.currency,
            payment_method=order.payment_method,
            reconcile_only=cancelled_first,
        )

    def perform(self, work: ChargeWork) -> Charged | Declined | None:
        if work.reconcile_only:
            return self.paydesk.succeeded_charge(work.order_reference)
        return self.paydesk.charge(
            idempotency_key=work.idempotency_key,
            amount=work.amount,
            currency=work.currency,
            payment_method=work.payment_method,
            customer_reference=work.customer_reference,
            order_reference=work.order_reference,
        )

    def complete(
        self, session: Session, task: ClaimedTask, result: Charged | Declined | None
    ) -> None:
        order_id = task.order_id
        assert order_id is not None
        if result is None:
            return  # reconciliation found no charge: nothing to undo
        still_placed = service.lock(session, order_id) == OrderStatus.PLACED
        order = session.get(Order, order_id)
        assert order is not None
        if isinstance(result, Declined):
            _record(
                session,
                order_id,
                "charge",
                "declined",
                None,
                order.total,
                order.currency,
                decline_code=result.code,
            )
            if not still_placed:
                return
            service.move(
                session,
                order_id,
                OrderStatus.PAYMENT_FAILED,
                actor=ACTOR,
                action="payment.declined",
                details={"code": result.code, "message": result.message},
            )
            service.release_stock(session, order_id)
            workflow.notify(session, order_id, "payment_failed")
            return
        _record(
            session,
            order_id,
            "charge",
            "succeeded",
            result.payment_id,
            result.amount,
            result.currency,
        )
        details = {
            "payment_id": result.payment_id,
            "amount": result.amount,
            "currency": result.currency,
        }
        if still_placed:
            service.move(
                session,
                order_id,
                OrderStatus.PAID,
                actor=ACTOR,
                action="payment.succeeded",
                details=details,
            )
            workflow.book(session, order_id)
        else:  # cancelled while the charge was in flight: give the money back
            chain.record(
                session,
                order_id,
                actor=ACTOR,
                action="payment.succeeded_after_cancel",
                details=details,
            )
            workflow.refund(session, order_id, reason="cancelled")


@dataclass(frozen=True)
class RefundWork:
    idempotency_key: str
    payment_id: str
    amount: int
    reason: str


class RefundStep:
    kind = workflow.REFUND
    dependency = workflow.DEPENDENCY_OF[kind]

    def __init__(self, paydesk: PaydeskClient) -> None:
        self.paydesk = paydesk

    def prepare(self, session: Session, task: ClaimedTask) -> RefundWork | None:
        assert task.order_id is not None
        payment = service.charged_payment(session, task.order_id)
        if payment is None or payment.provider_id is None:
            return None
        return RefundWork(
            idempotency_key=task.key,
            payment_id=payment.provider_id,
            amount=payment.amount,
            reason=str(task.payload.get("reason", "requested_by_customer")),
        )

    def perform(self, work: RefundWork) -> tuple[RefundWork, Refunded]:
        refunded = self.paydesk.refund(
            idempotency_key=work.idempotency_key,
            payment_id=work.payment_id,
            amount=work.amount,
            reason=work.reason,
        )
        return work, refunded

    def complete(
        self, session: Session, task: ClaimedTask, result: tuple[RefundWork, Refunded]
    ) -> None:
        work, refunded = result
        assert task.order_id is not None
        service.lock(session, task.order_id)
        order = session.get(Order, task.order_id)
        assert order is not None
        _record(
            session,
            order.id,
            "refund",
            "succeeded",
            refunded.refund_id,
            refunded.amount,
            order.currency,
        )
        chain.record(
            session,
            order.id,
            actor=ACTOR,
            action="payment.refunded",
            details={
                "refund_id": refunded.refund_id,
                "payment_id": work.payment_id,
                "amount": refunded.amount,
                "reason": work.reason,
            },
        )
