"""Orders: place (202, idempotent), read, list, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from sqlalchemy.exc import IntegrityError

from orderflow.errors import Invalid
from orderflow.orders import queries, service
from orderflow.orders.service import LineRequest
from orderflow.orders.status import OrderStatus
from orderflow.web.api.schemas import CancelIn, OrderIn, OrderPatchIn
from orderflow.web.context import Admin, Context, ReadSession

router = APIRouter(tags=["orders"])

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


@router.post("/orders", status_code=202)
def place_order(
    body: OrderIn,
    response: Response,
    ctx: Context,
    actor: Admin,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Accept an order: validated, stock reserved and its work queued before the 202."""
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
        raise Invalid("Idempotency-Key must be 1 to 255 characters", field="Idempotency-Key")
    lines = [LineRequest(sku=ln.sku, quantity=ln.quantity) for ln in body.lines]
    for attempt in (1, 2):
        try:
            with ctx.db.transaction() as session:
                order, _ = service.place_order(
                    session,
                    customer_id=body.customer_id,
                    lines=lines,
                    actor=actor,
                    idempotency_key=idempotency_key,
                )
                view = queries.order_view(session, order.id)
            break
        except IntegrityError:
            # A concurrent request with the same key won the race; the retry finds its order.
            if idempotency_key is None or attempt == 2:
                raise
    response.headers["Location"] = f"/api/v1/orders/{view['id']}"
    return view


@router.get("/orders/{order_id}")
def get_order(order_id: int, session: ReadSession, _: Admin) -> dict[str, Any]:
    return queries.order_view(session, order_id)


@router.get("/orders")
def list_orders(
    session: ReadSession,
    _: Admin,
    status: OrderStatus | None = None,
    customer_id: int | None = None,
    before: int | None = Query(None, description="cursor: the next_before of the previous page"),
    limit: int = Query(50, ge=1, le=500),
) -> dict[str, Any]:
    data, cursor = queries.list_orders(
        session, status=status, customer_id=customer_id, before=before, limit=limit
    )
    return {"data": data, "next_before": cursor}


@router.post("/orders/{order_id}/cancel")
def cancel_order(
    order_id: int, ctx: Context, actor: Admin, body: CancelIn | None = None
) -> dict[str, Any]:
    reason = body.reason if body else "cancelled by admin"
    with ctx.db.transaction() as session:
        service.cancel_order(session, order_id, actor=actor, reason=reason)
        return queries.order_view(session, order_id)


@router.patch("/orders/{order_id}")
def correct_order(order_id: int, body: OrderPatchIn, ctx: Context, actor: Admin) -> dict[str, Any]:
    """Correct the shipping address of an order not yet booked (then redrive its booking)."""
    with ctx.db.transaction() as session:
        service.correct_address(
            session, order_id, body.address.model_dump(), actor=actor, reason=body.reason
        )
        return queries.order_view(session, order_id)
