"""Bob's Post adapter: the calls orderflow makes, in the carrier's terms (bobs-post-api.md)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orderflow.http import json_body, make_client, raise_for_status, transport_errors
from orderflow.tasks.errors import PermanentError

API = "Bob's Post"
CARRIER = "bobs_post"


@dataclass(frozen=True)
class Booking:
    shipment_id: str
    tracking_number: str | None
    status: str


@dataclass(frozen=True)
class Observation:
    """One status the carrier reports for a shipment (from a webhook or from polling)."""

    status: str
    occurred_at: datetime


@dataclass(frozen=True)
class ShipmentState:
    booking: Booking
    events: list[Observation]


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _booking(body: dict[str, Any]) -> Booking:
    return Booking(
        shipment_id=body["id"], tracking_number=body.get("tracking_number"), status=body["status"]
    )


class BobsPostClient:
    def __init__(self, base_url: str, api_key: str, timeout: float) -> None:
        self._http = make_client(base_url, api_key, timeout)

    def close(self) -> None:
        self._http.close()

    def book(self, *, idempotency_key: str, body: dict[str, Any]) -> Booking:
        with transport_errors(API):
            response = self._http.post(
                "/v1/shipments", json=body, headers={"Idempotency-Key": idempotency_key}
            )
        raise_for_status(response, API)
        return _booking(json_body(response, API))

    def find_by_reference(self, reference: str) -> list[Booking]:
        with transport_errors(API):
            response = self._http.get("/v1/shipments", params={"reference": reference})
        raise_for_status(response, API)
        return [_booking(s) for s in json_body(response, API).get("data", [])]

    def get(self, shipment_id: str) -> ShipmentState:
        with transport_errors(API):
            response = self._http.get(f"/v1/shipments/{shipment_id}")
        raise_for_status(response, API)
        body = json_body(response, API)
        events = [
            Observation(status=e["status"], occurred_at=parse_time(e["occurred_at"]))
            for e in body.get("events", [])
        ]
        return ShipmentState(booking=_booking(body), events=events)

    def cancel(self, shipment_id: str) -> Booking:
        with transport_errors(API):
            response = self._http.post(f"/v1/shipments/{shipment_id}/cancel")
        if response.status_code == 409:
            raise PermanentError(
                f"{API}: shipment {shipment_id} can no longer be cancelled (already collected)",
                http_status=409,
            )
        raise_for_status(response, API)
        return _booking(json_body(response, API))
