"""Set-based placement: many orders checked, reserved and written in a few statements.

Each order stays all or nothing by a pre-check: every rule is decided in Python, in request
order, against rows this transaction read before anything is written; only accepted orders
are then written, together. A refused order writes nothing and never spoils the others of its
group. Within one group, a second request with an Idempotency-Key already used earlier in the
group behaves as a second sequential POST would.

Statements per group, whatever its size: ids, idempotency keys, customers, dependency health,
products; then the writes (`placement_write`: on PostgreSQL one statement inserts the orders,
lines, first history entries, first tasks and outbox events and takes the stock). Hot
products are what every placement contends for, so their row locks are held as briefly as
possible: by default (`lock_first=False`) stock is read without a lock and taken by the
writes' UPDATE, which locks the rows in SKU order just before COMMIT; if a concurrent
placement took the stock meanwhile, the CHECK (stock >= 0) fails the whole transaction
(IntegrityError) and the caller runs the group again with `lock_first=True`, which locks the
rows when it reads them, so its decisions cannot go stale.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from orderflow.audit import chain
from orderflow.audit.models import AuditEntry
from orderflow.catalog.models import Customer, Product
from orderflow.clock import now
from orderflow.db import allocate_ids
from orderflow.dependencies import health
from orderflow.dependencies.queries import waiting_for
from orderflow.errors import Conflict, DomainError, Invalid
from orderflow.orders import placement_write, queries, workflow
from orderflow.orders.models import Order, OrderLine, order_reference
from orderflow.orders.status import OrderStatus
from orderflow.outbox import OutboxEvent
from orderflow.tasks.models import Priority, Task, TaskStatus

MAX_QUANTITY = 10_000
MAX_TOTAL = 2**31 - 1  # orders.total is a 32-bit INTEGER on PostgreSQL

orders_t = cast(Table, Order.__table__)
lines_t = cast(Table, OrderLine.__table__)
products_t = cast(Table, Product.__table__)
customers_t = cast(Table, Customer.__table__)
entries_t = cast(Table, AuditEntry.__table__)
tasks_t = cast(Table, Task.__table__)
events_t = cast(Table, OutboxEvent.__table__)


@dataclass(frozen=True)
class LineRequest:
    sku: str
    quantity: int


@dataclass(frozen=True)
class PlacementRequest:
    customer_id: int
    lines: list[LineRequest]
    actor: str
    idempotency_key: str | None = None
    # Bulk intake (a batch, the queue) yields to orders placed one by one, lane by lane.
    priority: int = Priority.INTERACTIVE


@dataclass(frozen=True)
class Placed:
    """Accepted: `view` is the order as `GET /orders/{id}` shows it; `created` False on replay."""

    order_id: int
    created: bool
    view: dict[str, Any]


@dataclass(frozen=True)
class Refused:
    error: DomainError


Outcome = Placed | Refused


def request_fingerprint(customer_id: int, lines: list[LineRequest]) -> str:
    """What 'the same body' means for Idempotency-Key: same customer, same lines."""
    canonical = json.dumps(
        {"customer_id": customer_id, "lines": [[ln.sku, ln.quantity] for ln in lines]},
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def key_reused() -> Conflict:
    return Conflict(
        "this Idempotency-Key was already used with a different request body",
        code="idempotency_key_reused",
    )


def place_orders(
    session: Session, requests: list[PlacementRequest], *, lock_first: bool = False
) -> list[Outcome]:
    """Place each request as a single placement would, in one transaction (the caller's).

    Returns one outcome per request, in order. Never commits. Raises IntegrityError when a
    concurrent transaction took one of these Idempotency-Keys first, or (only without
    `lock_first`) the stock this group counted on: the caller rolls back and calls again
    with `lock_first=True` (a taken key is then found and replayed).
    """
    prints = [request_fingerprint(r.customer_id, r.lines) for r in requests]
    outcomes: list[Outcome | None] = [None] * len(requests)
    keys = {r.idempotency_key for r in requests if r.idempotency_key}
    known: dict[str, tuple[int, str | None]] = {}
    if keys:
        rows = session.execute(
            select(orders_t.c.idempotency_key, orders_t.c.id, orders_t.c.request_hash).where(
                orders_t.c.idempotency_key.in_(keys)
            )
        )
        known = {k: (oid, h) for k, oid, h in rows}

    # Shape checks need no database; every rule is applied in request order, below.
    shape = {i: _shape_problem(r.lines) for i, r in enumerate(requests)}
    candidates = [
        i for i, r in enumerate(requests) if r.idempotency_key not in known and shape[i] is None
    ]
    customers = _customers(session, {requests[i].customer_id for i in candidates})
    candidates = [i for i in candidates if requests[i].customer_id in customers]
    ids = allocate_ids(session, "orders", len(candidates))
    paydesk = (
        waiting_for(health.states(session).get(workflow.DEPENDENCY_OF[workflow.CHARGE]))
        if candidates
        else None
    )
    skus = sorted({ln.sku for i in candidates for ln in requests[i].lines})
    products = _products(session, skus, lock=lock_first)

    at = now()
    writes = _Writes()
    created_by_key: dict[str, int] = {}  # key -> index of the request of this group that took it
    stock = {sku: int(p["stock"]) for sku, p in products.items()}
    free_ids = iter(ids)
    for i, r in enumerate(requests):
        key = r.idempotency_key
        if key and key in known:
            order_id, fingerprint = known[key]
            outcomes[i] = (
                Placed(order_id, False, queries.order_view(session, order_id))
                if fingerprint == prints[i]
                else Refused(key_reused())
            )
            continue
        if key and key in created_by_key:
            first = outcomes[created_by_key[key]]
            assert isinstance(first, Placed)
            if prints[created_by_key[key]] == prints[i]:
                outcomes[i] = Placed(first.order_id, False, first.view)
            else:
                outcomes[i] = Refused(key_reused())
            continue
        try:
            problem = shape[i]
            if problem is not None:
                raise problem
            customer = customers.get(r.customer_id)
            if customer is None:
                raise Invalid(f"no customer with id {r.customer_id}", field="customer_id")
            priced = _priced(r.lines, products)
            _reserve(r.lines, stock)
        except DomainError as exc:
            outcomes[i] = Refused(exc)
            continue
        view = writes.add(next(free_ids), r, prints[i], customer, priced, at, paydesk)
        outcomes[i] = Placed(view["id"], True, view)
        if key:
            created_by_key[key] = i
    writes.flush(session, products, stock)
    decided = [o for o in outcomes if o is not None]
    assert len(decided) == len(requests)
    return decided


def _shape_problem(lines: list[LineRequest]) -> Invalid | None:
    if not lines:
        return Invalid("an order needs at least one line", field="lines")
    skus = [ln.sku for ln in lines]
    if len(set(skus)) != len(skus):
        return Invalid("each SKU may appear on one line only", field="lines")
    for ln in lines:
        if not 1 <= ln.quantity <= MAX_QUANTITY:
            return Invalid(
                f"quantity of {ln.sku} must be between 1 and {MAX_QUANTITY}", field="lines"
            )
    return None


def _customers(session: Session, ids: set[int]) -> dict[int, dict[str, Any]]:
    if not ids:
        return {}
    c = customers_t.c
    rows = session.execute(
        select(c.id, c.name, c.email, c.phone, c.address, c.payment_method).where(c.id.in_(ids))
    ).mappings()
    return {row["id"]: dict(row) for row in rows}


def _products(session: Session, skus: list[str], *, lock: bool) -> dict[str, dict[str, Any]]:
    """The products, with their stock locked if `lock` (see `placement_write.locked`)."""
    if not skus:
        return {}
    p = products_t.c
    query = select(p.sku, p.name, p.price, p.currency, p.weight_grams, p.stock).where(
        p.sku.in_(skus)
    )
    rows = session.execute(placement_write.locked(query, products_t) if lock else query).mappings()
    return {row["sku"]: dict(row) for row in rows}


def _priced(lines: list[LineRequest], products: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    unknown = [ln.sku for ln in lines if ln.sku not in products]
    if unknown:
        raise Invalid(f"unknown SKU: {', '.join(unknown)}", field="lines")
    if len({products[ln.sku]["currency"] for ln in lines}) > 1:
        raise Invalid("all lines of an order must be in one currency", field="lines")
    if sum(products[ln.sku]["price"] * ln.quantity for ln in lines) > MAX_TOTAL:
        raise Invalid(f"the order's total must not exceed {MAX_TOTAL}", field="lines")
    return [
        {
            "sku": ln.sku,
            "name": products[ln.sku]["name"],
            "quantity": ln.quantity,
            "unit_price": products[ln.sku]["price"],
            "weight_grams": products[ln.sku]["weight_grams"],
            "currency": products[ln.sku]["currency"],
        }
        for ln in lines
    ]


def _reserve(lines: list[LineRequest], stock: dict[str, int]) -> None:
    """All lines or none, against the stock left by the orders decided before this one."""
    for line in sorted(lines, key=lambda ln: ln.sku):
        if stock[line.sku] < line.quantity:
            raise Conflict(
                f"not enough stock of {line.sku} for {line.quantity}",
                code="insufficient_stock",
                field="lines",
            )
    for line in lines:
        stock[line.sku] -= line.quantity


class _Writes:
    """The rows of the accepted orders, written by `flush` in one statement per table."""

    def __init__(self) -> None:
        self.orders: list[dict[str, Any]] = []
        self.lines: list[dict[str, Any]] = []
        self.entries: list[dict[str, Any]] = []
        self.tasks: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    def add(
        self,
        order_id: int,
        r: PlacementRequest,
        fingerprint: str,
        customer: dict[str, Any],
        priced: list[dict[str, Any]],
        at: datetime,
        paydesk: dict[str, Any] | None,
    ) -> dict[str, Any]:
        total = sum(ln["unit_price"] * ln["quantity"] for ln in priced)
        currency = priced[0]["currency"]
        entry = chain.genesis(
            order_id,
            at,
            actor=r.actor,
            action="order.placed",
            details={
                "lines": [[ln.sku, ln.quantity] for ln in r.lines],
                "total": total,
                "currency": currency,
                "idempotency_key": r.idempotency_key,
            },
        )
        order = {
            "id": order_id,
            "customer_id": r.customer_id,
            "status": OrderStatus.PLACED.value,
            "total": total,
            "currency": currency,
            "ship_to": {
                "name": customer["name"],
                "email": customer["email"],
                "phone": customer["phone"],
                "address": customer["address"],
            },
            "payment_method": customer["payment_method"],
            "idempotency_key": r.idempotency_key,
            "request_hash": fingerprint,
            "placed_by": r.actor,
            "created_at": at,
            "updated_at": at,
            "audit_seq": 1,
            "audit_head": entry["hash"],
        }
        lines = [
            {k: ln[k] for k in ("sku", "name", "quantity", "unit_price", "weight_grams")}
            | {"order_id": order_id}
            for ln in priced
        ]
        task = {
            "key": workflow.key(order_id, workflow.CHARGE),
            "kind": workflow.CHARGE,
            "order_id": order_id,
            "payload": {},
            "status": TaskStatus.READY.value,
            "run_at": at,
            "attempts": 0,
            "priority": r.priority,
            "created_at": at,
        }
        self.orders.append(order)
        self.lines.extend(lines)
        self.entries.append(entry)
        self.tasks.append(task)
        self.events.append(
            {
                "topic": "order.placed",
                "order_id": order_id,
                "payload": {"reference": order_reference(order_id)},
                "created_at": at,
            }
        )
        return queries.placed_order_view(order, lines, entry, task, paydesk)

    def flush(self, session: Session, products: dict[str, Any], stock: dict[str, int]) -> None:
        if not self.orders:
            return
        taken = {sku: products[sku]["stock"] - left for sku, left in stock.items()}
        placement_write.write(
            session,
            [
                (orders_t, self.orders),
                (lines_t, self.lines),
                (entries_t, self.entries),
                (tasks_t, self.tasks),
                (events_t, self.events),
            ],
            products_t,
            {sku: n for sku, n in taken.items() if n},
        )
