"""Orders: place (202, idempotent; one by one or in batches), read, list, cancel, re-send."""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeVar

import structlog
from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from orderflow.backpressure import SHEDDING
from orderflow.errors import DomainError, Invalid, Throttled
from orderflow.orders import queries, replacement, service
from orderflow.orders.placement import LineRequest, Placed, PlacementRequest, Refused
from orderflow.orders.status import OrderStatus
from orderflow.people import four_eyes
from orderflow.people.roles import Role
from orderflow.tasks.models import Priority
from orderflow.web.api.schemas import (
    BatchIn,
    BatchOrderIn,
    CancelIn,
    OrderIn,
    OrderPatchIn,
    ResendIn,
)
from orderflow.web.context import (
    BEARER_SECURITY,
    Admin,
    AppContext,
    Context,
    ReadSession,
    Support,
    Viewer,
    authenticate,
)
from orderflow.web.errors import error_body, validation_error_body
from orderflow.web.openapi import READ, WRITE, errors, get_operation, link, success
from orderflow.web.params import MAX_ID, OrderRef, order_id_of

router = APIRouter(tags=["orders"])
log = structlog.get_logger("orderflow.web")

M = TypeVar("M", bound=BaseModel)

ORDER = "/api/v1/orders/{order_id}"


def _order_link(description: str) -> dict[str, Any]:
    return {"GetOrder": link(get_operation(ORDER), description, order_id="$response.body#/id")}


def _json(content: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    # Plain json.dumps: the views are JSON-ready already (FastAPI's jsonable_encoder walk of
    # a whole order costs more than building it).
    return Response(json.dumps(content), status, headers, media_type="application/json")


def _request(
    body: OrderIn, actor: str, key: str | None, priority: int = Priority.INTERACTIVE
) -> PlacementRequest:
    lines = [LineRequest(sku=ln.sku, quantity=ln.quantity) for ln in body.lines]
    return PlacementRequest(body.customer_id, lines, actor, key, priority)


# The two placement routes read their header and body themselves: FastAPI's per-request
# parameter and dependency machinery was the largest share of a placement's CPU. What they
# accept is still documented in the OpenAPI schema (openapi_extra) and validated by pydantic.
def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "security": BEARER_SECURITY,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        },
    }


async def _parse(request: Request, model: type[M], priority: int) -> tuple[str, M]:
    ctx: AppContext = request.app.state.ctx
    who = await authenticate(ctx, request.headers.get("authorization"))
    who.require(Role.ADMIN, "place orders")
    await _refuse_when_shedding(ctx, priority)
    try:
        return who.actor, model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


async def _refuse_when_shedding(ctx: AppContext, priority: int) -> None:
    """Backpressure: while payments of this priority (or, for bulk intake, of any) are far
    behind, new orders are refused with 429."""
    gauge = ctx.pressure
    current = await asyncio.to_thread(gauge.current) if gauge.stale() else gauge.current()
    pressure = current.of(priority)
    if pressure.state == SHEDDING:
        raise Throttled(
            f"intake is shedding load: payments are {pressure.oldest_due_seconds:.0f} s behind",
            retry_after=pressure.retry_after,
        )


@router.post(
    "/orders",
    status_code=202,
    responses={
        **success(
            202,
            "the order, accepted (Location: /api/v1/orders/{id})",
            links=_order_link("the order just accepted, as it moves on"),
        ),
        **errors(*WRITE, 409, 429),
    },
    openapi_extra={
        **_body_schema(OrderIn),
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        ],
    },
)
async def place_order(request: Request) -> Response:
    """Accept an order: validated, stock reserved and its work queued before the 202."""
    actor, body = await _parse(request, OrderIn, Priority.INTERACTIVE)
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
        raise Invalid("Idempotency-Key must be 1 to 255 characters", field="Idempotency-Key")
    ctx: AppContext = request.app.state.ctx
    outcome = await ctx.placement.submit(_request(body, actor, idempotency_key))
    if isinstance(outcome, Refused):
        raise outcome.error
    return _json(outcome.view, 202, {"Location": f"/api/v1/orders/{outcome.order_id}"})


@router.post("/orders/batch", responses=errors(*WRITE, 429), openapi_extra=_body_schema(BatchIn))
async def place_orders(request: Request) -> Response:
    """Up to 1,000 orders, each accepted or refused exactly as its own POST /orders would be."""
    actor, body = await _parse(request, BatchIn, Priority.BULK)
    results: list[dict[str, Any] | None] = [None] * len(body.orders)
    requests: list[PlacementRequest] = []
    positions: list[int] = []
    for i, entry in enumerate(body.orders):
        try:
            order = BatchOrderIn.model_validate(entry)
        except ValidationError as exc:
            results[i] = {"status": 422, "error": validation_error_body(exc.errors())}
            continue
        requests.append(_request(order, actor, order.idempotency_key, Priority.BULK))
        positions.append(i)
    ctx: AppContext = request.app.state.ctx
    outcomes = await ctx.placement.submit_many(requests) if requests else []
    for i, outcome in zip(positions, outcomes, strict=True):
        results[i] = _result(outcome)
    return _json({"results": results}, 200)


def _result(outcome: Placed | Refused | Exception) -> dict[str, Any]:
    if isinstance(outcome, Placed):
        return {"status": 202, "order": outcome.view}
    if isinstance(outcome, Refused):
        return {"status": outcome.error.status_code, "error": error_body(outcome.error)}
    if isinstance(outcome, DomainError):
        return {"status": outcome.status_code, "error": error_body(outcome)}
    log.error("web.batch_order_failed", error=repr(outcome))
    return {
        "status": 500,
        "error": {
            "code": "internal_error",
            "message": "an unexpected error occurred; it is logged",
        },
    }


@router.get("/orders/{order_id}", responses=errors(*READ, 404))
def get_order(order_id: OrderRef, session: ReadSession, _: Viewer) -> dict[str, Any]:
    return queries.order_view(session, order_id_of(order_id))


@router.get("/orders", responses=errors(*READ, 422))
def list_orders(
    session: ReadSession,
    _: Viewer,
    status: OrderStatus | None = None,
    customer_id: int | None = Query(None, ge=1, le=MAX_ID),
    before: int | None = Query(
        None, ge=1, le=MAX_ID, description="cursor: the next_before of the previous page"
    ),
    limit: int = Query(50, ge=1, le=500),
) -> dict[str, Any]:
    data, cursor = queries.list_orders(
        session, status=status, customer_id=customer_id, before=before, limit=limit
    )
    return {"data": data, "next_before": cursor}


@router.post(
    "/orders/{order_id}/cancel",
    responses={
        **success(200, "the order, cancelled", links=_order_link("the order, as it is undone")),
        **errors(*WRITE, 404, 409),
    },
)
def cancel_order(
    order_id: OrderRef, ctx: Context, who: Admin, body: CancelIn | None = None
) -> dict[str, Any]:
    """Cancel; an order whose card was charged is refunded, which needs a second person."""
    reason = body.reason if body else "cancelled by admin"
    known = order_id_of(order_id)
    with ctx.db.transaction() as session:
        if four_eyes.is_refund(session, known):
            four_eyes.guard(session, who, four_eyes.REFUND)
        service.cancel_order(session, known, actor=who.actor, reason=reason)
        return queries.order_view(session, known)


@router.post(
    "/orders/{order_id}/resend",
    status_code=201,
    responses={
        **success(
            201,
            "the replacement order, placed now (Location: /api/v1/orders/{id})",
            links=_order_link("the replacement, as it ships"),
        ),
        **success(200, "the replacement placed by an earlier re-send; nothing new was created"),
        **errors(*WRITE, 404, 409),
    },
)
def resend_order(
    order_id: OrderRef, ctx: Context, who: Admin, response: Response, body: ResendIn | None = None
) -> dict[str, Any]:
    """Re-send a lost or returned parcel (a delivery_failed order): a replacement order, same
    customer and lines, stock taken again, not charged again (the original's charge pays).
    Idempotent: once re-sent, this answers 200 with the same replacement. Like a refund, it
    needs a second person (409 four_eyes_required: propose it, action "resend")."""
    known = order_id_of(order_id)
    reason = body.reason if body else "parcel re-sent"
    with ctx.db.transaction() as session:
        new_id = replacement.check(session, known)
        created = new_id is None
        if new_id is None:  # not a replay: the re-send needs a second person's approval
            four_eyes.guard(session, who, four_eyes.RESEND)
            new_id = replacement.place(session, known, actor=who.actor, reason=reason)
        view = queries.order_view(session, new_id)
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/api/v1/orders/{new_id}"
    return view


@router.patch("/orders/{order_id}", responses=errors(*WRITE, 404, 409))
def correct_order(
    order_id: OrderRef, body: OrderPatchIn, ctx: Context, who: Support
) -> dict[str, Any]:
    """Correct the shipping address of an order not yet booked (then redrive its booking)."""
    known = order_id_of(order_id)
    with ctx.db.transaction() as session:
        service.correct_address(
            session, known, body.address.model_dump(), actor=who.actor, reason=body.reason
        )
        return queries.order_view(session, known)
