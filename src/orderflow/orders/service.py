"""Order use cases. Each takes a session and never commits: the entry point owns the transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from orderflow import deferred, outbox
from orderflow.audit import chain
from orderflow.catalog.models import Product
from orderflow.errors import Conflict, NotFound
from orderflow.orders import workflow
from orderflow.orders.models import Order, OrderLine
from orderflow.orders.placement import MAX_QUANTITY as MAX_QUANTITY
from orderflow.orders.placement import LineRequest as LineRequest
from orderflow.orders.placement import PlacementRequest, Refused, place_orders
from orderflow.orders.placement import request_fingerprint as request_fingerprint
from orderflow.orders.status import CANCELLABLE, IllegalTransition, OrderStatus, check
from orderflow.payments.models import Payment
from orderflow.tasks import queue
from orderflow.tasks.models import Priority


def place_order(
    session: Session,
    *,
    customer_id: int,
    lines: list[LineRequest],
    actor: str,
    idempotency_key: str | None = None,
    priority: int = Priority.INTERACTIVE,
) -> tuple[Order, bool]:
    """Validate, reserve stock and record the order with its first task: all or nothing.

    Returns the order and whether it was created now (False: an idempotent replay). Raises
    Invalid (422) or Conflict (409) for a refused order, having written nothing. Many orders
    at once: `placement.place_orders`.
    """
    request = PlacementRequest(customer_id, lines, actor, idempotency_key, priority)
    # Locking stock as it is read: an IntegrityError would end the caller's transaction.
    [outcome] = place_orders(session, [request], lock_first=True)
    if isinstance(outcome, Refused):
        raise outcome.error
    order = session.get(Order, outcome.order_id)
    assert order is not None
    return order, outcome.created


def move(
    session: Session,
    order_id: int,
    target: OrderStatus,
    *,
    actor: str,
    action: str,
    details: dict[str, Any] | None = None,
) -> OrderStatus:
    """Move an order along its lifecycle with its history entry; an illegal move raises.

    Returns the status the order moved from.
    """
    head = chain.lock_head(session, order_id)
    current = OrderStatus(head.status)
    check(current, target)
    chain.append(
        session, order_id, head, actor=actor, action=action, details=details, to_status=target
    )
    outbox.emit(session, f"order.{target}", order_id, {"from": current, **(details or {})})
    return current


@contextmanager
def deferred_writes(session: Session) -> Iterator[Callable[[], None]]:
    """Within this block, order moves and queued tasks are kept in memory and written on
    exit, one statement per table (see `orderflow.deferred`); the block gets a `flush` to
    write them earlier. Orders are locked as usual, so nobody sees them half-moved."""
    with deferred.deferring() as batch, session.no_autoflush:

        def flush() -> None:
            while batch.before_flush:
                batch.before_flush.popitem()[1]()
            session.flush()
            deferred.flush_rows(session, batch)
            chain.flush_heads(session, batch)
            queue.flush_deferred(session, batch)

        yield flush
        flush()


def lock(session: Session, order_id: int) -> OrderStatus:
    """Take the order's row lock until the transaction ends, and return its status.

    The order row is the one lock for everything about an order (its payment, shipment and
    e-mails too): take it before reading anything a decision depends on, so two concurrent
    transactions (a webhook and a worker, say) never both act on what the other is changing.
    """
    return OrderStatus(chain.lock_head(session, order_id).status)


def release_stock(session: Session, order_id: int) -> None:
    """Give the order's reserved stock back (called once, on the move to a failure end)."""
    lines = session.execute(
        select(OrderLine.sku, OrderLine.quantity)
        .where(OrderLine.order_id == order_id)
        .order_by(OrderLine.sku)
    ).all()
    for sku, quantity in lines:
        session.execute(
            update(Product).where(Product.sku == sku).values(stock=Product.stock + quantity)
        )


def charged_payment(session: Session, order_id: int) -> Payment | None:
    return session.scalar(
        select(Payment).where(
            Payment.order_id == order_id, Payment.kind == "charge", Payment.status == "succeeded"
        )
    )


def cancel_order(session: Session, order_id: int, *, actor: str, reason: str) -> None:
    """Cancel before collection: stock back, refund if charged, booking cancelled if booked."""
    if session.get(Order, order_id) is None:
        raise NotFound(f"no order with id {order_id}")
    try:
        previous = move(
            session,
            order_id,
            OrderStatus.CANCELLED,
            actor=actor,
            action="order.cancelled",
            details={"reason": reason},
        )
    except IllegalTransition as exc:
        raise Conflict(
            f"the order is {exc.current}; only {', '.join(sorted(CANCELLABLE))} orders "
            "can be cancelled",
            code="not_cancellable",
        ) from None
    release_stock(session, order_id)
    # A charge or booking still in flight sees the cancellation when it completes, and
    # compensates then (see the charge and booking steps).
    if charged_payment(session, order_id) is not None:
        workflow.refund(session, order_id, reason="cancelled")
    if previous == OrderStatus.SCHEDULED:
        workflow.cancel_shipment(session, order_id)
    workflow.notify(session, order_id, "cancelled")


ADDRESS_CORRECTABLE = frozenset({OrderStatus.PLACED, OrderStatus.PAID})


def correct_address(
    session: Session, order_id: int, address: dict[str, Any], *, actor: str, reason: str
) -> None:
    """Fix where the parcel goes, before it is booked. The order keeps its own copy."""
    if session.get(Order, order_id) is None:
        raise NotFound(f"no order with id {order_id}")
    status = lock(session, order_id)
    if status not in ADDRESS_CORRECTABLE:
        raise Conflict(
            f"the order is {status}: the address can only be corrected before booking",
            code="address_locked",
        )
    order = session.get(Order, order_id, populate_existing=True)
    assert order is not None
    before = order.ship_to["address"]
    revision = int(order.ship_to.get("revision", 0)) + 1
    # A new dict, so the JSON column sees the change.
    order.ship_to = {**order.ship_to, "address": address, "revision": revision}
    session.flush()
    chain.record(
        session,
        order_id,
        actor=actor,
        action="order.address_corrected",
        details={"before": before, "after": address, "reason": reason, "revision": revision},
    )
