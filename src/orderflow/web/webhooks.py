"""POST /webhooks/bobs-post: signed carrier webhooks, verified, deduplicated, applied."""

from __future__ import annotations

import time
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from orderflow.observability.metrics import WEBHOOKS
from orderflow.shipping import signature, tracking
from orderflow.shipping.bobs_post import CARRIER, parse_time
from orderflow.web.context import Context
from orderflow.web.errors import error_response

router = APIRouter(tags=["webhooks"])
log = structlog.get_logger("orderflow.webhooks")


class BobsPostEvent(BaseModel):
    event_id: str
    type: str
    shipment_id: str
    reference: str | None = None
    status: str
    occurred_at: str


@router.post("/webhooks/bobs-post", response_model=None)
async def bobs_post_webhook(request: Request, ctx: Context) -> dict[str, Any] | JSONResponse:
    body = await request.body()
    try:
        signature.verify(
            ctx.settings.bobs_post_webhook_secret,
            body,
            request.headers.get(signature.HEADER),
            now=time.time(),
            tolerance=ctx.settings.webhook_tolerance_seconds,
        )
    except signature.BadSignature as exc:
        WEBHOOKS.labels("rejected").inc()
        log.warning("webhook.rejected", reason=str(exc))
        return error_response(401, "bad_signature", str(exc))
    try:
        event = BobsPostEvent.model_validate_json(body)
        occurred_at = parse_time(event.occurred_at)
    except (ValidationError, ValueError) as exc:
        return error_response(422, "invalid_request", f"unreadable webhook: {exc}")
    if event.type != "shipment.status_changed":
        return {"status": "ignored"}

    outcome = await ctx.webhooks.submit(
        tracking.Observation(
            carrier=CARRIER,
            event_id=event.event_id,
            carrier_shipment_id=event.shipment_id,
            reference=event.reference,
            carrier_status=event.status,
            occurred_at=occurred_at,
            source="webhook",
        )
    )
    WEBHOOKS.labels(outcome).inc()
    log.info("webhook.received", event_id=event.event_id, status=event.status, outcome=outcome)
    return {"status": outcome}
