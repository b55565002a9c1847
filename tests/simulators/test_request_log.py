"""The simulators' read-only request log (`GET /_sim/requests`), used to measure drain rates."""

from __future__ import annotations

import time

import httpx

from orderflow.serving import BackgroundServer
from orderflow.simulators.bobs_post import BobsPostSwitches, create_app
from orderflow.simulators.chaos import request_kind
from tests.simulators.test_bobs_post_sim import API_KEY, AUTH, SECRET, booking


def test_request_kind_names_the_route_not_the_ids() -> None:
    """Ids become `{id}`, query parameter names are kept, `/v1` stays `/v1`."""
    assert request_kind("POST", "/v1/shipments", "") == "POST /v1/shipments"
    assert request_kind("GET", "/v1/shipments", "reference=ORD-1") == "GET /v1/shipments?reference"
    assert request_kind("GET", "/v1/shipments/bp_shp_8f3a", "") == "GET /v1/shipments/{id}"
    assert request_kind("POST", "/v1/shipments/bp_shp_1/cancel", "") == (
        "POST /v1/shipments/{id}/cancel"
    )
    assert request_kind("GET", "/v1/payments/42", "") == "GET /v1/payments/{id}"


def test_the_log_has_every_request_and_each_new_booking_with_its_time() -> None:
    """Bookings (new and replayed), look-ups, polls and 429s, in order; `since` filters."""
    switches = BobsPostSwitches(progress_seconds=60, rate_limit_per_second=3)
    server = BackgroundServer(create_app(api_key=API_KEY, webhook_secret=SECRET, switches=switches))
    server.start()
    try:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=5) as client:
            before = time.time()
            headers = {"Idempotency-Key": "k1"}
            made = client.post("/v1/shipments", json=booking(), headers=headers).json()
            client.post("/v1/shipments", json=booking(), headers=headers)  # a replay: 200
            client.get("/v1/shipments", params={"reference": "ORD-000123"})
            client.get(f"/v1/shipments/{made['id']}")  # over 3/s: 429
            log = client.get("/_sim/requests", params={"since": before}).json()
            later = client.get("/_sim/requests", params={"since": time.time() + 60}).json()
    finally:
        server.stop()
    entries = log["requests"]
    assert [(kind, status) for _, kind, status in entries] == [
        ("booked", 0),
        ("POST /v1/shipments", 201),
        ("POST /v1/shipments", 200),
        ("GET /v1/shipments?reference", 200),
        ("GET /v1/shipments/{id}", 429),
    ]
    times = [t for t, _, _ in entries]
    assert times == sorted(times) and before <= times[0] <= time.time()
    assert log["dropped"] == 0
    assert later["requests"] == []


def test_an_ambiguous_booking_is_logged_as_booked_with_its_504() -> None:
    """A booking made and answered 504 still counts as booked, at the moment of its answer."""
    switches = BobsPostSwitches(progress_seconds=60, ambiguous_rate=1.0)
    server = BackgroundServer(create_app(api_key=API_KEY, webhook_secret=SECRET, switches=switches))
    server.start()
    try:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=5) as client:
            client.post("/v1/shipments", json=booking(), headers={"Idempotency-Key": "k"})
            client.post("/v1/shipments", json=booking(), headers={"Idempotency-Key": "k"})
            entries = client.get("/_sim/requests").json()["requests"]
    finally:
        server.stop()
    assert [(kind, status) for _, kind, status in entries] == [
        ("booked", 0),
        ("POST /v1/shipments", 504),
        ("POST /v1/shipments", 504),  # the replay books nothing new
    ]
