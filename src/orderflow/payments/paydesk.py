"""Paydesk adapter: the calls orderflow makes, in Paydesk's terms (payment-gateway-api.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from orderflow.http import json_body, make_client, raise_for_status, transport_errors

API = "Paydesk"


@dataclass(frozen=True)
class Charged:
    payment_id: str
    amount: int
    currency: str


@dataclass(frozen=True)
class Declined:
    code: str
    message: str


@dataclass(frozen=True)
class Refunded:
    refund_id: str
    amount: int


class PaydeskClient:
    def __init__(self, base_url: str, api_key: str, timeout: float) -> None:
        self._http = make_client(base_url, api_key, timeout)

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, idempotency_key: str, body: dict[str, Any]) -> httpx.Response:
        with transport_errors(API):
            return self._http.post(path, json=body, headers={"Idempotency-Key": idempotency_key})

    def charge(
        self,
        *,
        idempotency_key: str,
        amount: int,
        currency: str,
        payment_method: str,
        customer_reference: str,
        order_reference: str,
    ) -> Charged | Declined:
        response = self._post(
            "/v1/payments",
            idempotency_key,
            {
                "amount": amount,
                "currency": currency,
                "payment_method": payment_method,
                "customer_reference": customer_reference,
                "order_reference": order_reference,
                "description": f"Order {order_reference}",
            },
        )
        if response.status_code == 402:  # a decline is an answer, not an error
            error = json_body(response, API).get("error", {})
            return Declined(code=error.get("code", "declined"), message=error.get("message", ""))
        raise_for_status(response, API)
        body = json_body(response, API)
        return Charged(payment_id=body["id"], amount=body["amount"], currency=body["currency"])

    def refund(
        self, *, idempotency_key: str, payment_id: str, amount: int, reason: str
    ) -> Refunded:
        response = self._post(
            "/v1/refunds",
            idempotency_key,
            {"payment_id": payment_id, "amount": amount, "reason": reason},
        )
        raise_for_status(response, API)
        body = json_body(response, API)
        return Refunded(refund_id=body["id"], amount=body.get("amount", amount))

    def succeeded_charge(self, order_reference: str) -> Charged | None:
        """Reconcile after an ambiguous failure: the order's successful charge, if any."""
        with transport_errors(API):
            response = self._http.get("/v1/payments", params={"order_reference": order_reference})
        raise_for_status(response, API)
        for p in json_body(response, API).get("data", []):
            if p.get("status") == "succeeded":
                return Charged(payment_id=p["id"], amount=p["amount"], currency=p["currency"])
        return None
