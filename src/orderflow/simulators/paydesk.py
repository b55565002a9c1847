"""Paydesk simulator: the payments API of specs/payment-gateway-api.md, misbehaviour on switches."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orderflow.simulators.chaos import (
    Chaos,
    ChaosSwitches,
    error_body,
    fingerprint,
    first_error,
    utc_now,
)

_CURRENCY_CODES = "GBP EUR USD CAD AUD NZD CHF SEK NOK DKK PLN CZK JPY"
CURRENCIES = frozenset(_CURRENCY_CODES.split())
DECLINES = {  # the test payment methods that decline, and their `card_error` code
    "pm_declined": "card_declined",
    "pm_insufficient_funds": "insufficient_funds",
    "pm_expired_card": "expired_card",
    "pm_fraud": "fraudulent",
}


@dataclass
class PaydeskSwitches(ChaosSwitches):
    """Runtime switches: outage, rate limit, random 5xx, ambiguous answers (see ChaosSwitches)."""

    rate_limit_per_second: int = 100


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, str_strip_whitespace=True)


class _Charge(_Strict):
    amount: int = Field(gt=0)
    currency: str
    payment_method: str = Field(min_length=1)
    customer_reference: str | None = None
    order_reference: str = Field(min_length=1, max_length=255)
    description: str | None = None

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        if value.upper() not in CURRENCIES:
            raise ValueError(f"unsupported currency {value!r}")
        return value.upper()


class _Refund(_Strict):
    payment_id: str = Field(min_length=1)
    amount: int | None = Field(default=None, gt=0)  # None: everything not yet refunded
    reason: str | None = None


def _error(status: int, kind: str, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(code, message, type=kind, **extra), status_code=status)


def _invalid(message: str, field_name: str, code: str = "invalid_request") -> JSONResponse:
    return _error(422, "invalid_request_error", code, message, field=field_name)


class _Gateway:
    """In-memory payments, refunds and idempotency records; runs on the server's event loop."""

    def __init__(self, api_key: str, switches: PaydeskSwitches) -> None:
        self.api_key = api_key
        self.chaos = Chaos(switches)
        self.reset()

    def reset(self) -> None:
        self.chaos.reset()
        self.payments: dict[str, dict[str, Any]] = {}
        # (endpoint, idempotency key) -> (body fingerprint, status, response body)
        self.keys: dict[tuple[str, str], tuple[str, int, dict[str, Any]]] = {}
        self.charges: Counter[str] = Counter()
        self.declines: Counter[str] = Counter()
        self.refunds: Counter[str] = Counter()
        self.refunded: Counter[str] = Counter()

    def stats(self) -> dict[str, Any]:
        return {
            "charges_by_order_reference": dict(self.charges),
            "declines_by_order_reference": dict(self.declines),
            "refunds_by_payment": dict(self.refunds),
            "refunded_amount_by_order_reference": dict(self.refunded),
            **self.chaos.stats(),
        }

    def charge(self, charge: _Charge) -> tuple[int, dict[str, Any]]:
        """Charge (201) or decline (402, also kept as a `failed` payment for look-ups)."""
        code = DECLINES.get(charge.payment_method)
        payment: dict[str, Any] = {
            "id": f"pay_{uuid.uuid4().hex}",
            "status": "failed" if code else "succeeded",
            "amount": charge.amount,
            "currency": charge.currency,
            "payment_method": charge.payment_method,
            "customer_reference": charge.customer_reference,
            "order_reference": charge.order_reference,
            "description": charge.description,
            "amount_refunded": 0,
            "failure_code": code,
            "created_at": utc_now(),
        }
        self.payments[payment["id"]] = payment
        if code:
            self.declines[charge.order_reference] += 1
            message = f"the card was declined ({code})"
            return 402, error_body(code, message, type="card_error", payment_id=payment["id"])
        self.charges[charge.order_reference] += 1
        return 201, dict(payment)

    def refund(self, payment: dict[str, Any], amount: int, reason: str | None) -> dict[str, Any]:
        payment["amount_refunded"] += amount
        self.refunds[payment["id"]] += 1
        self.refunded[payment["order_reference"]] += amount
        return {
            "id": f"re_{uuid.uuid4().hex}",
            "status": "succeeded",
            "payment_id": payment["id"],
            "amount": amount,
            "currency": payment["currency"],
            "reason": reason,
            "created_at": utc_now(),
        }


def create_app(*, api_key: str, switches: PaydeskSwitches | None = None) -> FastAPI:
    """The simulator as an ASGI app; `/v1` is Paydesk's API, `/_sim` controls it (no auth).

    Idempotent replays (same key, same body) answer the original status and body — a 201, or
    the original 402 — with `Idempotent-Replayed: true`; 4xx validation answers are not stored.
    """
    sim = _Gateway(api_key, switches or PaydeskSwitches())
    app = FastAPI(title="Paydesk simulator")
    app.state.sim = sim
    sim.chaos.install(app)

    def unauthorized(request: Request) -> JSONResponse | None:
        if request.headers.get("authorization") == f"Bearer {sim.api_key}":
            return None
        return _error(401, "authentication_error", "unauthorized", "missing or wrong API key")

    async def idempotent(request: Request) -> tuple[str, Any] | JSONResponse:
        """Auth, the key and the JSON body; or the answer when those end the request."""
        if denied := unauthorized(request):
            return denied
        key = request.headers.get("idempotency-key", "")
        if not 1 <= len(key) <= 255:
            msg = "Idempotency-Key header (1-255 chars) is required"
            return _error(400, "invalid_request_error", "idempotency_key_required", msg)
        try:
            raw = json.loads(await request.body())
        except ValueError:
            return _invalid("body is not valid JSON", "body")
        seen = sim.keys.get((request.url.path, key))
        if seen is None:
            return key, raw
        if seen[0] != fingerprint(raw):
            msg = "Idempotency-Key reused with a different body"
            return _error(409, "idempotency_error", "idempotency_conflict", msg)
        return JSONResponse(seen[2], seen[1], headers={"Idempotent-Replayed": "true"})

    async def answer(request: Request, key: str, raw: Any, status: int, body: Any) -> JSONResponse:
        sim.keys[(request.url.path, key)] = (fingerprint(raw), status, body)
        if sim.chaos.ambiguous():
            return await sim.chaos.ambiguous_response()
        return JSONResponse(body, status)

    @app.post("/v1/payments", response_model=None)
    async def pay(request: Request) -> JSONResponse:
        """`pm_ok_…` succeeds; `pm_declined`/`_insufficient_funds`/`_expired_card`/`_fraud` 402."""
        got = await idempotent(request)
        if isinstance(got, JSONResponse):
            return got
        key, raw = got
        try:
            charge = _Charge.model_validate(raw)
        except ValidationError as exc:
            return _invalid(*first_error(exc))
        method = charge.payment_method
        if method not in DECLINES and not method.startswith("pm_ok_"):
            msg = f"unknown payment method {method!r}"
            return _invalid(msg, "payment_method", "unknown_payment_method")
        return await answer(request, key, raw, *sim.charge(charge))

    @app.post("/v1/refunds", response_model=None)
    async def refund(request: Request) -> JSONResponse:
        """Refund all (no `amount`) or part; an unknown or failed payment is a 422 on the field
        `payment_id`; more than what is left is a 422 on `amount`."""
        got = await idempotent(request)
        if isinstance(got, JSONResponse):
            return got
        key, raw = got
        try:
            ask = _Refund.model_validate(raw)
        except ValidationError as exc:
            return _invalid(*first_error(exc))
        payment = sim.payments.get(ask.payment_id)
        if payment is None or payment["status"] != "succeeded":
            return _invalid(f"no succeeded payment {ask.payment_id}", "payment_id")
        left = payment["amount"] - payment["amount_refunded"]
        amount = left if ask.amount is None else ask.amount
        if amount > left or amount == 0:
            msg = f"cannot refund {amount}: {left} left on {payment['id']}"
            return _invalid(msg, "amount", "amount_too_large")
        return await answer(request, key, raw, 201, sim.refund(payment, amount, ask.reason))

    @app.get("/v1/payments", response_model=None)
    async def find(request: Request, order_reference: str | None = None) -> JSONResponse:
        """Every attempt for the order, oldest first: declined ones with `status: "failed"`."""
        if denied := unauthorized(request):
            return denied
        if not order_reference:
            return _invalid("query parameter order_reference is required", "order_reference")
        found = [p for p in sim.payments.values() if p["order_reference"] == order_reference]
        return JSONResponse({"data": found})

    @app.get("/_sim/stats")
    async def stats() -> dict[str, Any]:
        return sim.stats()

    @app.post("/_sim/reset")
    async def reset() -> dict[str, Any]:
        """Forget every payment, refund, key and count; back to the switches given at start."""
        sim.reset()
        return sim.stats()

    return app


def run(host: str, port: int, *, api_key: str, switches: PaydeskSwitches) -> None:
    """Serve the simulator with uvicorn until interrupted (`orderflow sim paydesk`)."""
    uvicorn.run(create_app(api_key=api_key, switches=switches), host=host, port=port)
