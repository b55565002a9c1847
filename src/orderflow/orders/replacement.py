"""Re-sending a lost or returned parcel: a replacement order, paid by the original's charge.

The contract allows exactly one Bob's Post booking per order, never moves a status backwards,
and keeps `delivery_failed` final; so a re-send is a new order (same customer, same lines at
the same prices, the original's ship-to) that names the one it replaces. It runs the normal
lifecycle under its own reference, so its booking and its "shipped" e-mail carry keys of their
own. Its charge step asks Paydesk for nothing, the customer paid once: in the transaction that
places it, it moves to `paid` on the original's charge (named in its history) and its booking
is queued. Not a `charge` task: that would wait for Paydesk's health and report on it without
having called it. At most one replacement per order (a unique column); a second re-send
returns the first.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.orm import Session

from orderflow import outbox
from orderflow.audit import chain
from orderflow.audit.models import AuditEntry
from orderflow.catalog.models import Product
from orderflow.clock import now
from orderflow.db import allocate_ids
from orderflow.errors import Conflict, NotFound
from orderflow.orders import service, workflow
from orderflow.orders.models import Order, OrderLine, order_reference
from orderflow.orders.queries import replacement_of
from orderflow.orders.status import OrderStatus
from orderflow.payments.models import Payment
from orderflow.tasks.models import Task

PLACED = "order.replacement_placed"  # the replacement's first history entry
RESENT = "order.resent"  # on the original: which order replaces it
COVERED = "payment.covered_by_original"  # the replacement's charge step

RESENDABLE = OrderStatus.DELIVERY_FAILED


def refunded(session: Session, order_id: int) -> bool:
    """A refund was issued, or is queued, for this order."""
    issued = select(Payment.id).where(Payment.order_id == order_id, Payment.kind == "refund")
    queued = select(Task.id).where(Task.key == workflow.key(order_id, workflow.REFUND))
    return (
        session.scalar(issued.limit(1)) is not None or session.scalar(queued.limit(1)) is not None
    )


def check(session: Session, order_id: int) -> int | None:
    """Lock the order and say whether it may be re-sent: its replacement's id if it already
    was (a replay), None if it may be now. NotFound / Conflict when it may not."""
    if session.get(Order, order_id) is None:
        raise NotFound(f"no order with id {order_id}")
    status = service.lock(session, order_id)
    existing = replacement_of(session, order_id)
    if existing is not None:
        return existing
    ref = order_reference(order_id)
    if status != RESENDABLE:
        raise Conflict(
            f"{ref} is {status}: only a {RESENDABLE} order (parcel lost or returned) can be "
            "re-sent",
            code="not_resendable",
        )
    if refunded(session, order_id):
        raise Conflict(
            f"{ref} was refunded: a re-send would ship goods nobody paid for",
            code="refunded",
        )
    return None


def refuse_refund_if_replaced(session: Session, order_id: int) -> None:
    """A refund of an order whose parcel was re-sent would pay back goods being delivered."""
    existing = replacement_of(session, order_id)
    if existing is not None:
        raise Conflict(
            f"{order_reference(order_id)} was re-sent as {order_reference(existing)}: "
            "it cannot be refunded",
            code="resent",
        )


def resend(session: Session, order_id: int, *, actor: str, reason: str = "") -> tuple[int, bool]:
    """Place the replacement of a delivery_failed order (stock taken again, charge step queued,
    both histories written), all or nothing. Returns its id and whether it was created now
    (False: the order had been re-sent already, and that replacement is returned)."""
    existing = check(session, order_id)
    if existing is not None:
        return existing, False
    return place(session, order_id, actor=actor, reason=reason), True


def place(session: Session, order_id: int, *, actor: str, reason: str = "") -> int:
    """`resend` once `check` (in this transaction) found that the order may be re-sent."""
    original = session.get(Order, order_id, populate_existing=True)
    assert original is not None
    lines = sorted(original.lines, key=lambda ln: ln.sku)
    _take_stock(session, [(ln.sku, ln.quantity) for ln in lines])
    [new_id] = allocate_ids(session, "orders", 1)
    at = now()
    entry = chain.genesis(
        new_id,
        at,
        actor=actor,
        action=PLACED,
        details={
            "replaces": original.reference,
            "lines": [[ln.sku, ln.quantity] for ln in original.lines],
            "total": original.total,
            "currency": original.currency,
            "reason": reason or None,
        },
    )
    session.execute(
        insert(cast(Table, Order.__table__)).values(
            id=new_id,
            customer_id=original.customer_id,
            status=OrderStatus.PLACED.value,
            total=original.total,
            currency=original.currency,
            ship_to=dict(original.ship_to),
            payment_method=original.payment_method,
            placed_by=actor,
            created_at=at,
            updated_at=at,
            audit_seq=1,
            audit_head=entry["hash"],
            replaces=order_id,
        )
    )
    session.execute(insert(cast(Table, OrderLine.__table__)), [_line(ln, new_id) for ln in lines])
    session.execute(insert(cast(Table, AuditEntry.__table__)).values(**entry))
    new_ref = order_reference(new_id)
    outbox.emit(
        session, "order.placed", new_id, {"reference": new_ref, "replaces": original.reference}
    )
    _pay_with_original(session, new_id, actor)
    chain.record(
        session,
        order_id,
        actor=actor,
        action=RESENT,
        details={"replacement": new_ref, "reason": reason or None},
    )
    return new_id


def _pay_with_original(session: Session, order_id: int, actor: str) -> None:
    """The replacement's charge step: no call to Paydesk; paid by the original's charge."""
    original, charge = covering_charge(session, order_id)
    service.move(
        session,
        order_id,
        OrderStatus.PAID,
        actor=actor,
        action=COVERED,
        details={
            "original": original,
            "payment_id": charge.provider_id if charge else None,
            "amount": charge.amount if charge else None,
            "currency": charge.currency if charge else None,
        },
    )
    workflow.book(session, order_id)


def _line(line: OrderLine, order_id: int) -> dict[str, Any]:
    names = ("sku", "name", "quantity", "unit_price", "weight_grams")
    return {"order_id": order_id, **{n: getattr(line, n) for n in names}}


def _take_stock(session: Session, wanted: list[tuple[str, int]]) -> None:
    """Reserve each line's units again, in SKU order (the placements' lock order); a shortage
    raises, and the caller's transaction rolls back whatever was taken before it."""
    for sku, quantity in wanted:
        taken = session.execute(
            update(Product)
            .where(Product.sku == sku, Product.stock >= quantity)
            .values(stock=Product.stock - quantity)
        ).rowcount  # type: ignore[attr-defined]
        if taken != 1:
            raise Conflict(
                f"not enough stock of {sku} for {quantity} to re-send the parcel",
                code="insufficient_stock",
                field="lines",
            )


def covering_charge(session: Session, order_id: int) -> tuple[str, Payment | None]:
    """The order that paid for this one (the first of its line of replacements; itself if
    it replaces none), and that order's successful charge."""
    order = session.get(Order, order_id)
    assert order is not None
    seen = {order.id}
    while order.replaces is not None and order.replaces not in seen:
        seen.add(order.replaces)
        parent = session.get(Order, order.replaces)
        assert parent is not None
        order = parent
    return order.reference, service.charged_payment(session, order.id)
