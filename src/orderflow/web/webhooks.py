"""POST /webhooks/bobs-post: signed carrier webhooks, verified, deduplicated, applied."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, StringConstraints, ValidationError

from orderflow.observability.metrics import WEBHOOKS
from orderflow.shipping import signature, tracking
from orderflow.shipping.bobs_post import CARRIER
from orderflow.web.context import AppContext
from orderflow.web.errors import error_response
from orderflow.web.openapi import errors
from orderflow.web.params import UtcDateTime

router = APIRouter(tags=["webhooks"])
log = structlog.get_logger("orderflow.webhooks")


def _text(max_length: int) -> Any:
    # What our columns hold (carrier_events); no NUL (PostgreSQL text cannot hold one).
    return StringConstraints(min_length=1, max_length=max_length, pattern=r"^[^\x00]+$")


class BobsPostEvent(BaseModel):
    event_id: Annotated[str, _text(200)]
    type: Annotated[str, _text(100)]
    shipment_id: Annotated[str, _text(100)]
    reference: Annotated[str, _text(64)] | None = None
    status: Annotated[str, _text(32)]
    occurred_at: UtcDateTime  # the carrier's timestamps are UTC (bobs-post-api.md)


@router.post(
    "/webhooks/bobs-post",
    response_model=None,
    responses={
        200: {"description": "acknowledged: applied, duplicate, stale, unmatched or ignored"},
        **errors(413, 503),
        401: {**errors(401)[401], "description": "missing, malformed or wrong signature"},
        422: {
            **errors(422)[422],
            "description": "correctly signed but unreadable: it can never be applied",
        },
    },
)
async def bobs_post_webhook(request: Request) -> Response:
    """Bob's Post's signed webhooks (`X-BobsPost-Signature`); no bearer token."""
    # Four of these per order: the context is read directly and the answer is ready-made
    # bytes, sparing FastAPI's dependency and serialisation machinery (as for placements).
    ctx: AppContext = request.app.state.ctx
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
    except ValidationError as exc:
        # Bob's Post retries any answer but a 2xx a few times, then drops it (bobs-post-api.md):
        # a 422 says plainly that this one can never be applied; the retries are bounded.
        WEBHOOKS.labels("unreadable").inc()
        log.warning("webhook.unreadable", error=str(exc)[:500])
        problems = exc.errors(include_url=False, include_input=False)
        return error_response(422, "invalid_request", f"unreadable webhook: {_first(problems)}")
    occurred_at: datetime = event.occurred_at
    if event.type != "shipment.status_changed":
        return _answer("ignored")

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
    # Debug, like each task a worker runs: four a second per order at info cost ~2 % of the API's
    # CPU; what became of each event is in `carrier_events` and the webhooks metric anyway.
    log.debug("webhook.received", event_id=event.event_id, status=event.status, outcome=outcome)
    return _answer(outcome)


def _answer(outcome: str) -> Response:
    return Response(b'{"status": "%s"}' % outcome.encode(), media_type="application/json")


def _first(problems: list[Any]) -> str:
    first = problems[0] if problems else {}
    where = ".".join(str(p) for p in first.get("loc", ())) or "body"
    return f"{where}: {first.get('msg', 'invalid')}"
