"""Read models: the order as clients see it (the contract's JSON), and order lists."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, lazyload
from sqlalchemy.orm.attributes import set_committed_value

from orderflow.audit.models import AuditEntry
from orderflow.catalog.models import Customer
from orderflow.dependencies import health
from orderflow.dependencies.queries import waiting_for
from orderflow.errors import NotFound
from orderflow.notifications.models import Notification
from orderflow.orders import waiting
from orderflow.orders.models import Order, OrderLine, order_reference, parse_order_reference
from orderflow.orders.status import TERMINAL, OrderStatus
from orderflow.orders.workflow import DEPENDENCY_OF
from orderflow.payments.models import Payment
from orderflow.shipping.models import Shipment
from orderflow.tasks.models import Task, TaskStatus


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def summary(order: Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "reference": order.reference,
        "status": order.status,
        "customer_id": order.customer_id,
        "total": order.total,
        "currency": order.currency,
        "created_at": _iso(order.created_at),
        "updated_at": _iso(order.updated_at),
        "replaces": order_reference(order.replaces) if order.replaces else None,
    }


# What of an order a worker's step may read (`Step.reads`): its relationships, and its customer.
ORDER_READS = frozenset({"lines", "shipment", "payments", "notifications", "customer"})
_RELATED: tuple[tuple[str, Any, bool], ...] = (  # name, model, many
    ("lines", OrderLine, True),
    ("shipment", Shipment, False),
    ("payments", Payment, True),
    ("notifications", Notification, True),
)


def preload(session: Session, reads: Mapping[int, Collection[str]]) -> list[Any]:
    """Load these orders, and of each what its steps read (of `ORDER_READS`), in at most six
    statements, so that the steps' reads (`session.get`, `order.shipment`…) are answered from
    the session, not one query each; nothing an order's steps do not read is loaded. Keep the
    list returned while they are read: the session holds what it loaded only weakly."""
    if not reads:
        return []
    ids = sorted(reads)
    orders = {
        o.id: o
        for o in session.scalars(
            select(Order).where(Order.id.in_(ids)).options(lazyload(Order.lines))
        )
    }
    kept: list[Any] = list(orders.values())
    for name, model, many in _RELATED:
        wanted = {i: o for i, o in orders.items() if name in reads[i]}
        if not wanted:
            continue
        rows = session.scalars(
            select(model).where(model.order_id.in_(sorted(wanted))).order_by(model.id)
        ).all()
        kept += rows
        found: dict[int, list[Any]] = {}
        for row in rows:
            found.setdefault(row.order_id, []).append(row)
        for i, order in wanted.items():
            these = found.get(i, [])
            set_committed_value(order, name, these if many else (these[0] if these else None))
    customer_ids = sorted({o.customer_id for i, o in orders.items() if "customer" in reads[i]})
    if customer_ids:
        kept += session.scalars(select(Customer).where(Customer.id.in_(customer_ids))).all()
    return kept


def replacement_of(session: Session, order_id: int) -> int | None:
    """The id of the order that re-sent this one's parcel (`replaces` names it), if any."""
    return session.scalar(select(Order.id).where(Order.replaces == order_id))


def replaced_by(session: Session, order: Order) -> str | None:
    """`replacement_of` as a reference. Only a delivery_failed order can have one, so no
    other costs a query."""
    if order.status != OrderStatus.DELIVERY_FAILED:
        return None
    found = replacement_of(session, order.id)
    return order_reference(found) if found else None


def order_view(session: Session, order_id: int) -> dict[str, Any]:
    order = session.get(Order, order_id)
    if order is None:
        raise NotFound(f"no order with id {order_id}")
    payments = session.scalars(select(Payment).where(Payment.order_id == order_id)).all()
    charge = next((p for p in payments if p.kind == "charge"), None)
    refund = next((p for p in payments if p.kind == "refund"), None)
    shipment = session.scalar(select(Shipment).where(Shipment.order_id == order_id))
    notifications = session.scalars(
        select(Notification).where(Notification.order_id == order_id).order_by(Notification.id)
    ).all()
    history = session.scalars(
        select(AuditEntry).where(AuditEntry.order_id == order_id).order_by(AuditEntry.seq)
    ).all()
    open_work = session.scalars(
        select(Task)
        .where(Task.order_id == order_id, Task.status != TaskStatus.DONE)
        .order_by(Task.id)
    ).all()
    dependencies = health.states(session) if open_work else {}
    waits = {
        t.id: waiting_for(dependencies.get(DEPENDENCY_OF.get(t.kind, "")))
        for t in open_work
        if t.status != TaskStatus.DEAD
    }
    return {
        **summary(order),
        "lines": [
            {
                "sku": ln.sku,
                "name": ln.name,
                "quantity": ln.quantity,
                "unit_price": ln.unit_price,
                "amount": ln.amount,
            }
            for ln in order.lines
        ],
        "ship_to": order.ship_to,
        "placed_by": order.placed_by,
        "replaced_by": replaced_by(session, order),
        "payment": None
        if charge is None
        else {
            "status": charge.status,
            "payment_id": charge.provider_id,
            "amount": charge.amount,
            "currency": charge.currency,
            "decline_code": charge.decline_code,
            "refund": None
            if refund is None
            else {"refund_id": refund.provider_id, "amount": refund.amount},
        },
        "shipment": None
        if shipment is None
        else {
            "carrier": shipment.carrier,
            "tracking_number": shipment.tracking_number,
            "status": shipment.status,
            "carrier_status": shipment.carrier_status,
            "shipment_id": shipment.carrier_shipment_id,
        },
        "notifications": [
            {"kind": n.kind, "sent_at": _iso(n.sent_at), "to": n.recipient} for n in notifications
        ],
        "work": [
            {
                "step": t.kind,
                "status": t.status,
                "attempts": t.attempts,
                "next_attempt_at": _iso(t.run_at) if t.status == TaskStatus.READY else None,
                "last_error": t.last_error,
                "error_class": t.error_class,
                "waiting_for": waits.get(t.id),
            }
            for t in open_work
        ],
        "waiting": next((w for w in waits.values() if w is not None), None),
        "history": [
            {
                "seq": e.seq,
                "at": _iso(e.at),
                "actor": e.actor,
                "action": e.action,
                "from": e.from_status,
                "to": e.to_status,
                "details": e.details,
            }
            for e in history
        ],
    }


def placed_order_view(
    order: dict[str, Any],
    lines: list[dict[str, Any]],
    entry: dict[str, Any],
    task: dict[str, Any],
    waiting: dict[str, Any] | None,
) -> dict[str, Any]:
    """`order_view` of an order just placed, built from the rows written (nothing re-read):
    no payment, shipment or e-mail yet, its first history entry and its `charge` task."""
    return {
        "id": order["id"],
        "reference": order_reference(order["id"]),
        "status": order["status"],
        "customer_id": order["customer_id"],
        "total": order["total"],
        "currency": order["currency"],
        "created_at": _iso(order["created_at"]),
        "updated_at": _iso(order["updated_at"]),
        "lines": [
            {
                "sku": ln["sku"],
                "name": ln["name"],
                "quantity": ln["quantity"],
                "unit_price": ln["unit_price"],
                "amount": ln["quantity"] * ln["unit_price"],
            }
            for ln in lines
        ],
        "ship_to": order["ship_to"],
        "placed_by": order["placed_by"],
        "replaces": None,
        "replaced_by": None,
        "payment": None,
        "shipment": None,
        "notifications": [],
        "work": [
            {
                "step": task["kind"],
                "status": task["status"],
                "attempts": task["attempts"],
                "next_attempt_at": _iso(task["run_at"]),
                "last_error": None,
                "error_class": None,
                "waiting_for": waiting,
            }
        ],
        "waiting": waiting,
        "history": [
            {
                "seq": entry["seq"],
                "at": _iso(entry["at"]),
                "actor": entry["actor"],
                "action": entry["action"],
                "from": entry["from_status"],
                "to": entry["to_status"],
                "details": entry["details"],
            }
        ],
    }


def list_orders(
    session: Session,
    *,
    status: str | None = None,
    customer_id: int | None = None,
    before: int | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], int | None]:
    """Newest first, keyset-paginated: pass the returned cursor as `before` for the next page."""
    query = select(Order).order_by(Order.id.desc()).limit(limit + 1)
    if status:
        query = query.where(Order.status == status)
    if customer_id is not None:
        query = query.where(Order.customer_id == customer_id)
    if before is not None:
        query = query.where(Order.id < before)
    orders = list(session.scalars(query))
    cursor = orders[limit - 1].id if len(orders) > limit else None
    return [summary(o) for o in orders[:limit]], cursor


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


CUSTOMERS_LISTED = 5000


def search_orders(
    session: Session,
    *,
    text: str | None = None,
    status: str | None = None,
    created_from: datetime | None = None,
    created_before: datetime | None = None,
    before: int | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], int | None]:
    """Orders by reference (ORD-000123), customer name or e-mail (part of it), status and
    creation time; newest first, keyset-paginated like `list_orders`. Each row carries its
    customer's name and e-mail."""
    # The page's ids first (from the indexes alone where it can), then those orders' rows:
    # a customer with thousands of orders costs index entries, not rows.
    query = select(Order.id).order_by(Order.id.desc()).limit(limit + 1)
    words = (text or "").strip()
    if words:
        order_id = parse_order_reference(words.upper())
        if order_id is not None:
            query = query.where(Order.id == order_id)
        else:
            pattern = _like(words.lower())
            customers = select(Customer.id).where(
                or_(
                    func.lower(Customer.name).like(pattern, escape="\\"),
                    func.lower(Customer.email).like(pattern, escape="\\"),
                )
            )
            # The matching customers as a list when there are not too many: the planner then
            # knows how many, and walks the newest orders keeping theirs (a subquery's LIKE is
            # estimated at a handful of customers, and their every order is fetched).
            matched = list(session.scalars(customers.limit(CUSTOMERS_LISTED + 1)))
            listed = len(matched) <= CUSTOMERS_LISTED
            query = query.where(Order.customer_id.in_(matched if listed else customers))
    if status:
        query = query.where(Order.status == status)
    if created_from is not None:
        query = query.where(Order.created_at >= created_from)
    if created_before is not None:
        query = query.where(Order.created_at < created_before)
    if before is not None:
        query = query.where(Order.id < before)
    rows = session.execute(
        select(Order, Customer.name, Customer.email)
        .join(Customer, Customer.id == Order.customer_id)
        .where(Order.id.in_(query.scalar_subquery()))
        .order_by(Order.id.desc())
    ).all()
    cursor = rows[limit - 1][0].id if len(rows) > limit else None
    found = [{**summary(o), "customer": {"name": n, "email": e}} for o, n, e in rows[:limit]]
    return found, cursor


def waiting_words(session: Session, order_ids: list[int]) -> dict[int, str]:
    """What each of these orders waits for, in words (one query for their open work)."""
    if not order_ids:
        return {}
    tasks = session.scalars(
        select(Task).where(
            Task.order_id.in_(order_ids),
            Task.status.in_([TaskStatus.READY, TaskStatus.RUNNING, TaskStatus.DEAD]),
        )
    ).all()
    ended = set(
        session.scalars(select(Order.id).where(Order.id.in_(order_ids), Order.status.in_(TERMINAL)))
    )
    dependencies = health.states(session) if tasks else {}
    work: dict[int, list[dict[str, Any]]] = {}
    for t in tasks:
        dependency = dependencies.get(DEPENDENCY_OF.get(t.kind, ""))
        row = {
            "step": t.kind,
            "status": t.status,
            "attempts": t.attempts,
            "waiting_for": None if t.status == TaskStatus.DEAD else waiting_for(dependency),
        }
        work.setdefault(int(t.order_id or 0), []).append(row)
    return {
        order_id: waiting.of_order(rows, ended=order_id in ended) or ""
        for order_id, rows in work.items()
    }
