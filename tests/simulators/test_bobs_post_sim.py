"""The Bob's Post simulator over real HTTP: the contract, the parcel life, and every switch."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from orderflow.serving import BackgroundServer
from orderflow.shipping.signature import HEADER, BadSignature, verify
from orderflow.simulators.bobs_post import BobsPostSwitches, create_app

API_KEY = "bp-test-key"
SECRET = "whsec-test"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


class Receiver:
    """A merchant webhook endpoint on a real port that checks every signature it gets."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.fail_next = 0
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            body = await request.body()
            with self.lock:
                if self.fail_next > 0:
                    self.fail_next -= 1
                    return Response(status_code=500)
                try:
                    verify(SECRET, body, request.headers.get(HEADER), time.time(), 300)
                except BadSignature:
                    self.bad_signatures += 1
                    return Response(status_code=400)
                self.events.append(json.loads(body))
            return Response(status_code=204)

        self.server = BackgroundServer(app)

    @property
    def url(self) -> str:
        return f"{self.server.url}/hook"

    def statuses(self, shipment_id: str) -> list[str]:
        with self.lock:
            return [e["status"] for e in self.events if e["shipment_id"] == shipment_id]


Start = Callable[..., httpx.Client]


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[Receiver]:
    r = Receiver()
    with r.server:
        yield r


@pytest.fixture
def receiver(receiver_server: Receiver) -> Receiver:
    """The module's webhook receiver, emptied for this test."""
    with receiver_server.lock:
        receiver_server.events.clear()
        receiver_server.bad_signatures = receiver_server.fail_next = 0
    return receiver_server


@pytest.fixture
def start(receiver: Receiver) -> Iterator[Start]:
    """Start a simulator with the given switches; returns an authenticated client to it."""
    stack: list[tuple[BackgroundServer, httpx.Client]] = []

    def _start(**switches: Any) -> httpx.Client:
        defaults: dict[str, Any] = {"progress_seconds": 0.05, "webhook_url": receiver.url}
        sw = BobsPostSwitches(**{**defaults, **switches})
        server = BackgroundServer(create_app(api_key=API_KEY, webhook_secret=SECRET, switches=sw))
        server.start()
        client = httpx.Client(base_url=server.url, headers=AUTH, timeout=5)
        stack.append((server, client))
        return client

    yield _start
    for server, client in stack:
        client.close()
        server.stop()


def booking(reference: str = "ORD-000123", postcode: str = "SW1Y 4JH", **over: Any) -> Any:
    body: dict[str, Any] = {
        "reference": reference,
        "recipient": {
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "phone": "+44 20 7946 0000",
            "address": {
                "line1": "12 St James's Sq",
                "line2": None,
                "city": "London",
                "postcode": postcode,
                "country": "GB",
            },
        },
        "parcels": [{"weight_grams": 1200, "description": "2 x Widget"}],
        "service": "standard",
    }
    return {**body, **over}


def book(client: httpx.Client, key: str, body: Any = None) -> httpx.Response:
    return client.post("/v1/shipments", json=body or booking(), headers={"Idempotency-Key": key})


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def status_of(client: httpx.Client, shipment_id: str) -> str:
    return str(client.get(f"/v1/shipments/{shipment_id}").json()["status"])


def stats(client: httpx.Client) -> dict[str, Any]:
    return dict(client.get("/_sim/stats").json())


def test_a_missing_or_wrong_api_key_gets_401(start: Start) -> None:
    """Every /v1 call needs `Authorization: Bearer <api_key>`."""
    client = start()
    assert client.get("/v1/shipments?reference=x", headers={"Authorization": ""}).status_code == 401
    wrong = {"Authorization": "Bearer nope", "Idempotency-Key": "k"}
    assert client.post("/v1/shipments", json=booking(), headers=wrong).status_code == 401


def test_a_booking_answers_201_in_the_contract_shape(start: Start) -> None:
    """201 with a bp_shp_ id, a BP…GB tracking number, status booked and a UTC `Z` timestamp."""
    client = start(progress_seconds=60)
    response = book(client, "key-1")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "reference", "status", "tracking_number", "created_at"}
    assert re.fullmatch(r"bp_shp_[0-9a-f]{32}", body["id"])
    assert re.fullmatch(r"BP\d{9}GB", body["tracking_number"])
    assert body["status"] == "booked" and body["reference"] == "ORD-000123"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["created_at"])
    got = client.get(f"/v1/shipments/{body['id']}").json()
    assert [e["status"] for e in got["events"]] == ["booked"]


def test_same_key_same_body_returns_the_original_with_200(start: Start) -> None:
    """A replay books nothing new: same shipment, 200, one booking counted."""
    client = start()
    first, again = book(client, "key-1"), book(client, "key-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert stats(client)["bookings_by_reference"] == {"ORD-000123": 1}


def test_same_key_different_body_is_409_and_missing_key_is_400(start: Start) -> None:
    """A reused key with another body is a conflict; no key at all is a bad request."""
    client = start()
    assert book(client, "key-1").status_code == 201
    assert book(client, "key-1", booking(reference="ORD-2")).status_code == 409
    assert client.post("/v1/shipments", json=booking()).status_code == 400
    assert stats(client)["bookings_by_reference"] == {"ORD-000123": 1}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda b: b["recipient"]["address"].update(country="XX"), "recipient.address.country"),
        (lambda b: b.update(parcels=[]), "parcels"),
        (lambda b: b["parcels"][0].update(weight_grams=0), "parcels[0].weight_grams"),
        (lambda b: b["recipient"].pop("name"), "recipient.name"),
        (lambda b: b["recipient"]["address"].pop("postcode"), "recipient.address.postcode"),
        (lambda b: b["recipient"]["address"].update(line1=""), "recipient.address.line1"),
    ],
)
def test_an_invalid_body_is_422_naming_the_field(
    start: Start, change: Callable[[Any], Any], field: str
) -> None:
    """Unknown country, no parcels, weight ≤ 0, missing name/address: 422 invalid_request."""
    client = start()
    body = booking()
    change(body)
    response = book(client, "key-1", body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["field"] == field and error["message"]
    assert stats(client)["bookings_by_reference"] == {}


def test_lookup_by_reference_and_unknown_ids(start: Start) -> None:
    """`?reference=` lists that reference's shipments only; an unknown id is 404."""
    client = start()
    a = book(client, "k1", booking(reference="ORD-A")).json()
    b = book(client, "k2", booking(reference="ORD-A")).json()
    book(client, "k3", booking(reference="ORD-B"))
    found = client.get("/v1/shipments", params={"reference": "ORD-A"}).json()["data"]
    assert {s["id"] for s in found} == {a["id"], b["id"]}
    assert client.get("/v1/shipments", params={"reference": "none"}).json() == {"data": []}
    assert client.get("/v1/shipments/bp_shp_unknown").status_code == 404


def test_a_parcel_reaches_complete_with_signed_webhooks(start: Start, receiver: Receiver) -> None:
    """booked → … → complete by itself; each change is an event and a verified webhook."""
    client = start()
    shipment = book(client, "key-1").json()
    path = ["collected", "in_transit", "out_for_delivery", "complete"]
    wait_for(lambda: receiver.statuses(shipment["id"]) == path)
    got = client.get(f"/v1/shipments/{shipment['id']}").json()
    assert got["status"] == "complete"
    assert [e["status"] for e in got["events"]] == ["booked", *path]
    assert all(e["occurred_at"].endswith("Z") and e["location"] for e in got["events"])
    event = receiver.events[-1]
    assert set(event) == {"event_id", "type", "shipment_id", "reference", "status", "occurred_at"}
    assert event["type"] == "shipment.status_changed" and event["event_id"].startswith("bp_evt_")
    assert event["reference"] == "ORD-000123" and receiver.bad_signatures == 0
    assert stats(client)["webhooks_sent"] == 4


@pytest.mark.parametrize(
    ("postcode", "path"),
    [
        ("LOST", ["collected", "lost"]),
        ("RETURN", ["collected", "in_transit", "out_for_delivery", "failed_attempt"]),
        ("STUCK", []),
    ],
)
def test_special_postcodes_drive_the_failure_paths(
    start: Start, receiver: Receiver, postcode: str, path: list[str]
) -> None:
    """LOST ends `lost` after collection, RETURN ends `returned_to_sender`, STUCK stays booked."""
    client = start()
    shipment = book(client, "key-1", booking(postcode=postcode)).json()
    if postcode == "RETURN":
        path = [*path, "returned_to_sender"]
    if path:
        wait_for(lambda: receiver.statuses(shipment["id"]) == path)
    else:
        time.sleep(0.4)
    got = client.get(f"/v1/shipments/{shipment['id']}").json()
    assert [e["status"] for e in got["events"]] == ["booked", *path]
    time.sleep(0.15)
    assert receiver.statuses(shipment["id"]) == path  # and nothing more after the end


def test_cancel_before_collection_is_200_and_after_is_409(start: Start, receiver: Receiver) -> None:
    """A booked shipment can be cancelled (webhook, counted); a collected one cannot."""
    client = start(progress_seconds=60)
    booked = book(client, "k1").json()
    response = client.post(f"/v1/shipments/{booked['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    wait_for(lambda: receiver.statuses(booked["id"]) == ["cancelled"])
    collected = book(client, "k2", booking(reference="ORD-2")).json()
    client.post(f"/_sim/shipments/{collected['id']}/status", json={"status": "collected"})
    assert client.post(f"/v1/shipments/{collected['id']}/cancel").status_code == 409
    assert client.post("/v1/shipments/bp_shp_nope/cancel").status_code == 404
    assert stats(client)["cancels"] == 1


def test_forcing_a_status_records_an_event_and_a_webhook(start: Start, receiver: Receiver) -> None:
    """POST /_sim/shipments/{id}/status moves the parcel now; an unknown status is 422."""
    client = start(progress_seconds=60)
    shipment = book(client, "k1").json()
    forced = client.post(f"/_sim/shipments/{shipment['id']}/status", json={"status": "lost"})
    assert forced.status_code == 200 and forced.json()["status"] == "lost"
    wait_for(lambda: receiver.statuses(shipment["id"]) == ["lost"])
    bad = client.post(f"/_sim/shipments/{shipment['id']}/status", json={"status": "eaten"})
    assert bad.status_code == 422


def test_duplicate_and_loss_switches_with_a_seed(start: Start, receiver: Receiver) -> None:
    """With 30% duplicates and 20% loss over 100 changes, the receiver sees exactly what
    the stats claim: lost events never arrive, duplicated ones arrive twice, same event_id."""
    client = start(webhook_duplicate_rate=0.3, webhook_loss_rate=0.2, seed=42)
    shipment = book(client, "k1", booking(postcode="STUCK")).json()
    for i in range(100):
        status = ("in_transit", "failed_attempt")[i % 2]
        client.post(f"/_sim/shipments/{shipment['id']}/status", json={"status": status})
    s = stats(client)
    assert 8 <= s["webhooks_lost"] <= 35 and 10 <= s["webhooks_duplicated"] <= 45
    delivered = 100 - s["webhooks_lost"] + s["webhooks_duplicated"]
    wait_for(lambda: len(receiver.events) == delivered)
    per_event = Counter(e["event_id"] for e in receiver.events)
    assert len(per_event) == 100 - s["webhooks_lost"]
    twice = s["webhooks_duplicated"]
    assert Counter(per_event.values()) == {1: len(per_event) - twice, 2: twice}
    assert stats(client)["webhooks_sent"] == delivered


def test_shuffled_webhooks_can_arrive_out_of_order(start: Start, receiver: Receiver) -> None:
    """With a shuffle window, arrival order differs from occurrence order (seeded)."""
    # Seed 3 delays the second webhook 1.09 s and the third 0.74 s: a swap no scheduling hiccup
    # of a loaded machine undoes (with a 0.3 s window their 52 ms gap was undone once in CI).
    client = start(webhook_shuffle_seconds=2.0, seed=3, progress_seconds=60)
    shipment = book(client, "k1", booking(postcode="STUCK")).json()
    posted = ["collected", "in_transit", "out_for_delivery", "failed_attempt", "complete"]
    for status in posted:
        client.post(f"/_sim/shipments/{shipment['id']}/status", json={"status": status})
    wait_for(lambda: len(receiver.events) == 5)
    assert [e["status"] for e in receiver.events] != posted


def test_failed_webhooks_are_retried_then_dropped(start: Start, receiver: Receiver) -> None:
    """A 5xx from the merchant is retried; after the retries run out the webhook is dropped."""
    client = start(progress_seconds=60, webhook_retry_seconds=0.01)
    shipment = book(client, "k1").json()
    receiver.fail_next = 2
    client.post(f"/_sim/shipments/{shipment['id']}/status", json={"status": "collected"})
    wait_for(lambda: receiver.statuses(shipment["id"]) == ["collected"])
    receiver.fail_next = 4
    client.post(f"/_sim/shipments/{shipment['id']}/status", json={"status": "in_transit"})
    wait_for(lambda: stats(client)["webhooks_failed"] == 1)
    assert receiver.statuses(shipment["id"]) == ["collected"]
    assert stats(client)["webhooks_sent"] == 1


def test_an_outage_answers_503_and_loses_webhooks(start: Start, receiver: Receiver) -> None:
    """During an outage every call is 503 and status changes send no webhook, ever."""
    client = start(progress_seconds=0.2)
    shipment = book(client, "k1").json()
    wait_for(lambda: len(receiver.statuses(shipment["id"])) >= 1)
    client.patch("/_sim/switches", json={"outage": "503"})
    assert client.get(f"/v1/shipments/{shipment['id']}").status_code == 503
    assert book(client, "k2", booking(reference="ORD-2")).status_code == 503
    wait_for(lambda: stats(client)["webhooks_lost"] >= 1)
    client.patch("/_sim/switches", json={"outage": None})
    wait_for(lambda: status_of(client, shipment["id"]) == "complete")
    # The last webhook may still be on its way: wait for it rather than race it.
    wait_for(lambda: len(receiver.statuses(shipment["id"])) == 4 - stats(client)["webhooks_lost"])
    assert client.get("/v1/shipments", params={"reference": "ORD-2"}).json() == {"data": []}


def test_a_hanging_outage_makes_the_client_time_out(start: Start) -> None:
    """`outage: hang` holds the request longer than the client waits."""
    client = start(outage="hang", hang_seconds=0.6)
    with pytest.raises(httpx.ReadTimeout):
        client.get("/v1/shipments", params={"reference": "x"}, timeout=0.2)


def test_over_the_rate_limit_is_429_with_retry_after(start: Start) -> None:
    """Above `rate_limit_per_second` per key: 429 with a Retry-After in whole seconds."""
    client = start(rate_limit_per_second=5)
    answers = [client.get("/v1/shipments", params={"reference": "x"}) for _ in range(12)]
    limited = [r for r in answers if r.status_code == 429]
    # At most 12 - 5 (the bucket's size); fewer when a loaded machine lets it refill meanwhile.
    assert 1 <= len(limited) <= 7
    assert all(int(r.headers["Retry-After"]) >= 1 for r in limited)
    assert stats(client)["requests_by_status"]["429"] == len(limited)


def test_error_rate_answers_5xx_before_doing_anything(start: Start) -> None:
    """With error_rate 1 every call is a 500/502/503 and nothing gets booked."""
    client = start(error_rate=1.0, seed=1)
    codes = {book(client, f"k{i}").status_code for i in range(10)}
    assert codes <= {500, 502, 503} and codes
    assert stats(client)["bookings_by_reference"] == {}


def test_an_ambiguous_504_still_books(start: Start) -> None:
    """The client sees 504, yet `?reference=` finds the booking and a retry returns it."""
    client = start(ambiguous_rate=1.0)
    assert book(client, "k1").status_code == 504
    client.patch("/_sim/switches", json={"ambiguous_rate": 0.0})
    found = client.get("/v1/shipments", params={"reference": "ORD-000123"}).json()["data"]
    assert len(found) == 1
    again = book(client, "k1")
    assert again.status_code == 200 and again.json()["id"] == found[0]["id"]
    assert stats(client)["bookings_by_reference"] == {"ORD-000123": 1}


def test_an_ambiguous_hang_still_books(start: Start) -> None:
    """In `hang` mode the client times out, yet the booking happened."""
    client = start(ambiguous_rate=1.0, ambiguous_mode="hang", hang_seconds=0.6)
    with pytest.raises(httpx.ReadTimeout):
        client.post("/v1/shipments", json=booking(), headers={"Idempotency-Key": "k1"}, timeout=0.2)
    found = client.get("/v1/shipments", params={"reference": "ORD-000123"}).json()["data"]
    assert len(found) == 1


def test_switches_are_validated_and_reset_restores_them(start: Start) -> None:
    """PATCH rejects unknown switches and bad values; reset forgets state and restores switches."""
    client = start(progress_seconds=60)
    assert client.patch("/_sim/switches", json={"nonsense": 1}).status_code == 422
    assert client.patch("/_sim/switches", json={"error_rate": 2}).status_code == 422
    assert client.patch("/_sim/switches", json={"outage": "sometimes"}).status_code == 422
    assert client.patch("/_sim/switches", json={"error_rate": 0.5}).json()["error_rate"] == 0.5
    book(client, "k1")
    client.post("/_sim/reset")
    assert client.get("/_sim/switches").json()["error_rate"] == 0.0
    s = stats(client)
    assert s["bookings_by_reference"] == {} and s["requests"] == 0
    assert client.get("/v1/shipments", params={"reference": "ORD-000123"}).json()["data"] == []


def test_webhooks_still_go_out_after_a_reset(start: Start, receiver: Receiver) -> None:
    """A reset forgets the webhooks still waiting and restarts the senders: new ones arrive."""
    client = start(progress_seconds=60, webhook_shuffle_seconds=1.0, seed=2)  # due in 0.96 s
    before = book(client, "k1").json()
    client.post(f"/_sim/shipments/{before['id']}/status", json={"status": "collected"})
    client.post("/_sim/reset")
    client.patch("/_sim/switches", json={"webhook_shuffle_seconds": 0.0})
    after = book(client, "k1").json()
    client.post(f"/_sim/shipments/{after['id']}/status", json={"status": "collected"})
    wait_for(lambda: receiver.statuses(after["id"]) == ["collected"])
    time.sleep(1.0)  # past the forgotten webhook's due time
    assert receiver.statuses(before["id"]) == [] and stats(client)["webhooks_sent"] == 1
