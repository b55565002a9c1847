"""Order use cases. Each takes a session and never commits: the entry point owns the transaction."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from orderflow import deferred, outbox
from orderflow.audit import chain
from orderflow.catalog.models import Customer, Product
from orderflow.errors import Conflict, Invalid, NotFound
from orderflow.orders import workflow
from orderflow.orders.models import Order, OrderLine
from orderflow.orders.status import CANCELLABLE, IllegalTransition, OrderStatus, check
from orderflow.payments.models import Payment
from orderflow.tasks import queue

MAX_QUANTITY = 10_000


@dataclass(frozen=True)
class LineRequest:
    sku: str
    quantity: int


def request_fingerprint(customer_id: int, lines: list[LineRequest]) -> str:
    """What 'the same body' means for Idempotency-Key: same customer, same lines."""
    canonical = json.dumps(
        {"customer_id": customer_id, "lines": [[ln.sku, ln.quantity] for ln in lines]},
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def find_by_idempotency_key(
    session: Session, idempotency_key: str, fingerprint: str
) -> Order | None:
    order = session.scalar(select(Order).where(Order.idempotency_key == idempotency_key))
    if order is not None and order.request_hash != fingerprint:
        raise Conflict(
            "this Idempotency-Key was already used with a different request body",
            code="idempotency_key_reused",
        )
    return order


def place_order(
    session: Session,
    *,
    customer_id: int,
    lines: list[LineRequest],
    actor: str,
    idempotency_key: str | None = None,
) -> tuple[Order, bool]:
    """Validate, reserve stock and record the order with its first task: all or nothing.

    Returns the order and whether it was created now (False: an idempotent replay).
    """
    fingerprint = request_fingerprint(customer_id, lines)
    if idempotency_key:
        existing = find_by_idempotency_key(session, idempotency_key, fingerprint)
        if existing is not None:
            return existing, False

    customer = session.get(Customer, customer_id)
    if customer is None:
        raise Invalid(f"no customer with id {customer_id}", field="customer_id")
    products = _products_for(session, lines)
    currencies = {p.currency for p in products.values()}
    if len(currencies) > 1:
        raise Invalid("all lines of an order must be in one currency", field="lines")

    # Reserve in SKU order, so two orders never lock the same rows in opposite orders.
    for line in sorted(lines, key=lambda ln: ln.sku):
        reserved = session.execute(
            update(Product)
            .where(Product.sku == line.sku, Product.stock >= line.quantity)
            .values(stock=Product.stock - line.quantity)
        ).rowcount  # type: ignore[attr-defined]
        if reserved != 1:
            raise Conflict(
                f"not enough stock of {line.sku} for {line.quantity}",
                code="insufficient_stock",
                field="lines",
            )

    ship_to = {
        "name": customer.name,
        "email": customer.email,
        "phone": customer.phone,
        "address": customer.address,
    }
    order = Order(
        customer_id=customer.id,
        status=OrderStatus.PLACED,
        total=sum(products[ln.sku].price * ln.quantity for ln in lines),
        currency=currencies.pop(),
        ship_to=ship_to,
        payment_method=customer.payment_method,
        idempotency_key=idempotency_key,
        request_hash=fingerprint,
        placed_by=actor,
    )
    order.lines = [
        OrderLine(
            sku=ln.sku,
            name=products[ln.sku].name,
            quantity=ln.quantity,
            unit_price=products[ln.sku].price,
            weight_grams=products[ln.sku].weight_grams,
        )
        for ln in lines
    ]
    session.add(order)
    session.flush()
    chain.append(
        session,
        order.id,
        chain.ChainHead(status=OrderStatus.PLACED, seq=0, hash=chain.GENESIS),
        actor=actor,
        action="order.placed",
        details={
            "lines": [[ln.sku, ln.quantity] for ln in lines],
            "total": order.total,
            "currency": order.currency,
            "idempotency_key": idempotency_key,
        },
    )
    workflow.charge(session, order.id)
    outbox.emit(session, "order.placed", order.id, {"reference": order.reference})
    session.refresh(order)
    return order, True


def _products_for(session: Session, lines: list[LineRequest]) -> dict[str, Product]:
    if not lines:
        raise Invalid("an order needs at least one line", field="lines")
    skus = [ln.sku for ln in lines]
    if len(set(skus)) != len(skus):
        raise Invalid("each SKU may appear on one line only", field="lines")
    for ln in lines:
        if not 1 <= ln.quantity <= MAX_QUANTITY:
            raise Invalid(
                f"quantity of {ln.sku} must be between 1 and {MAX_QUANTITY}", field="lines"
            )
    products = {p.sku: p for p in session.scalars(select(Product).where(Product.sku.in_(skus)))}
    unknown = [s for s in skus if s not in products]
    if unknown:
        raise Invalid(f"unknown SKU: {', '.join(unknown)}", field="lines")
    return products


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
            session.flush()
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
