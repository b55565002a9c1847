"""The API's edge: hostile or odd input is a 4xx with the JSON error body, never a 500."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from orderflow.catalog.models import Customer
from orderflow.config import Settings
from orderflow.db import Database
from orderflow.orders.models import Order
from orderflow.people import service as people
from orderflow.serving import BackgroundServer
from orderflow.shipping.signature import HEADER, sign
from orderflow.tasks.models import Task
from orderflow.web.app import create_app
from orderflow.web.body_limit import BodyLimit
from tests.support.console import CSRF
from tests.support.stack import ADDRESS, PASSWORD

TOKEN = "edge-token"
SECRET = "edge-webhook-secret"
LIMIT = 1 << 20  # ORDERFLOW_MAX_BODY_BYTES of these tests
TOO_BIG = 2**63  # one past the largest id a row can have


@dataclass
class Edge:
    app: FastAPI
    db: Database
    server: BackgroundServer
    api: httpx.Client  # /api/v1 with the admin token
    probe_calls: list[str]

    def customer(self, email: str = "ada@example.com", name: str = "Ada") -> int:
        body = {"name": name, "email": email, "address": ADDRESS, "payment_method": "pm_ok_visa"}
        response = self.api.post("/customers", json=body)
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def product(self, sku: str = "WIDGET", stock: int = 10) -> None:
        body = {"sku": sku, "name": sku, "price": 100, "currency": "GBP", "weight_grams": 1}
        response = self.api.post("/products", json={**body, "stock": stock})
        assert response.status_code == 201, response.text

    def order(self, customer: int, sku: str = "WIDGET") -> dict[str, Any]:
        body = {"customer_id": customer, "lines": [{"sku": sku, "quantity": 1}]}
        response = self.api.post("/orders", json=body)
        assert response.status_code == 202, response.text
        return dict(response.json())

    def count(self, model: type[Any]) -> int:
        with self.db.read() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def edge(database_url: str) -> Iterator[Edge]:
    """The API on a real port (bodies up to 1 MiB), with a route that records being called."""
    db = Database(database_url)
    settings = Settings(
        _env_file=None,
        database_url=database_url,
        admin_token=TOKEN,
        bobs_post_webhook_secret=SECRET,
        max_body_bytes=LIMIT,
    )
    app = create_app(settings, db)
    calls: list[str] = []

    async def probe() -> dict[str, str]:
        calls.append("probe")
        return {"status": "ran"}

    app.add_api_route("/probe", probe, methods=["POST"])
    with (
        BackgroundServer(app) as server,
        httpx.Client(
            base_url=f"{server.url}/api/v1",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        ) as api,
    ):
        yield Edge(app, db, server, api, calls)
    db.dispose()


def _refused(response: httpx.Response, status: int) -> dict[str, Any]:
    """The answer has this status and the API's JSON error body; returns the error object."""
    assert response.status_code == status, (response.request.url, response.text)
    error = response.json()["error"]
    assert error["code"] and error["message"], response.text
    return dict(error)


# --- ids beyond 64 bits, zero and negative ------------------------------------------------


def test_ids_beyond_64_bits_zero_or_negative_are_404_or_422(edge: Edge) -> None:
    """An id no row can have is an unknown id (404) in a path, a bad parameter (422) in a
    query or body, on every route that takes one; never a 500."""
    customer = edge.customer()
    edge.product()
    for bad in (TOO_BIG, 10**20, 0, -1):
        for path in (
            f"/orders/{bad}",
            f"/orders/{bad}/audit",
            f"/orders/{bad}/investigation",
            f"/orders/{bad}/dispute-bundle",
            f"/customers/{bad}",
            f"/dead-letters/{bad}",
            f"/dead-letters/redrives/{bad}",
        ):
            _refused(edge.api.get(path), 404)
        _refused(edge.api.post(f"/orders/{bad}/cancel"), 404)
        _refused(edge.api.patch(f"/orders/{bad}", json={"address": ADDRESS}), 404)
        _refused(edge.api.post(f"/dead-letters/{bad}/redrive"), 404)
        _refused(edge.api.post(f"/dead-letters/{bad}/discard", json={"reason": "x"}), 404)
        for query in ("before", "customer_id"):
            _refused(edge.api.get("/orders", params={query: bad}), 422)
        body = {"customer_id": bad, "lines": [{"sku": "WIDGET", "quantity": 1}]}
        _refused(edge.api.post("/orders", json=body), 422)
        batch = edge.api.post("/orders/batch", json={"orders": [{**body, "idempotency_key": "k"}]})
        assert batch.status_code == 200 and batch.json()["results"][0]["status"] == 422
    assert edge.api.get("/orders", params={"customer_id": customer}).json()["data"] == []


def test_console_order_pages_with_ids_beyond_64_bits_are_not_found(edge: Edge) -> None:
    """The console answers its 'no such order' page for ids no row can have, never a 500."""
    with edge.db.transaction() as session:
        people.add_user(session, "ada", "admin", PASSWORD, actor="test")
    origin = {"Origin": edge.server.url}
    with httpx.Client(
        base_url=f"{edge.server.url}/console", timeout=30, follow_redirects=True
    ) as console:
        login = {"name": "ada", "password": PASSWORD}
        assert console.post("/login", data=login, headers=origin).status_code == 200
        found = CSRF.search(console.get("/orders").text)
        assert found, "not logged in"
        csrf = {"csrf_token": found.group(1)}
        for ref in ("99999999999999999999", str(TOO_BIG), "ORD-999999999999999999"):
            assert console.get(f"/orders/{ref}").status_code == 404, ref
            cancel = console.post(f"/orders/{ref}/cancel", data=csrf, headers=origin)
            assert cancel.status_code == 404, ref
        assert console.get("/orders", params={"before": "99999999999999999999"}).status_code == 200
        placed = console.post(
            "/orders/new",
            data={
                "customer_id": "99999999999999999999",
                "sku": ["WIDGET"],
                "quantity": ["1"],
                **csrf,
            },
            headers=origin,
        )
        assert placed.status_code == 422
    assert edge.count(Order) == 0


# --- NUL bytes, naive timestamps -----------------------------------------------------------


def test_nul_bytes_in_names_and_filters_are_422(edge: Edge) -> None:
    """A NUL in any text (PostgreSQL cannot store or compare one) is refused before a query."""
    customer = edge.customer()
    edge.product()
    order = edge.order(customer)
    nul_customer = {"name": "A\x00da", "email": "nul@example.com", "address": ADDRESS}
    _refused(edge.api.post("/customers", json={**nul_customer, "payment_method": "pm"}), 422)
    street = {**ADDRESS, "line2": "flat\x001"}
    body = {"name": "Ada", "email": "a2@example.com", "address": street, "payment_method": "pm"}
    _refused(edge.api.post("/customers", json=body), 422)
    _refused(edge.api.get("/customers", params={"q": "a\x00"}), 422)
    for name in ("step", "cause", "dependency"):
        _refused(edge.api.get("/dead-letters", params={name: "\x00"}), 422)
    _refused(edge.api.post("/dead-letters/redrive", json={"step": "\x00", "dry_run": True}), 422)
    _refused(edge.api.get("/products/WID%00GET"), 404)
    _refused(edge.api.post(f"/orders/{order['id']}/cancel", json={"reason": "x\x00"}), 422)
    line = {"sku": "WIDGET", "quantity": 1}
    entry = {"customer_id": customer, "lines": [line], "idempotency_key": "k\x00"}
    batch = edge.api.post("/orders/batch", json={"orders": [entry]})
    assert batch.status_code == 200 and batch.json()["results"][0]["status"] == 422
    assert edge.count(Customer) == 1 and edge.count(Order) == 1


def test_timestamps_without_an_offset_are_utc_and_unplaceable_ones_422(edge: Edge) -> None:
    """`?since=2024-01-01` means midnight UTC; a timestamp that leaves the calendar once
    converted to UTC is a 422; never a 500."""
    failed_at = datetime(2024, 1, 1, 0, 30, tzinfo=UTC)
    with edge.db.transaction() as session:
        session.add(
            Task(
                key="edge:book",
                kind="book",
                status="dead",
                error_class="permanent",
                last_error="HTTP 422",
                first_failed_at=failed_at,
                last_failed_at=failed_at,
                finished_at=failed_at,
            )
        )

    def total(**params: str) -> int:
        response = edge.api.get("/dead-letters", params=params)
        assert response.status_code == 200, response.text
        return int(response.json()["total"])

    assert total(since="2024-01-01") == 1
    assert total(since="2024-01-01T00:00:00") == 1
    assert total(since="2024-01-01T01:00:00") == 0
    assert total(until="2024-01-01T01:00") == 1
    assert total(since="2024-01-01T01:00:00+01:00") == 1  # 00:00 UTC
    for extreme in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        _refused(edge.api.get("/dead-letters", params={"since": extreme}), 422)
    dry = edge.api.post("/dead-letters/redrive", json={"since": "2024-01-01", "dry_run": True})
    assert dry.status_code == 200, dry.text
    assert dry.json()["would_redrive"] == 1


# --- lenient input: integers, e-mail addresses, currencies, LIKE patterns ---------------


def test_integers_are_json_integers_not_booleans_strings_or_floats(edge: Edge) -> None:
    """`quantity: true`, `"1"` or `1.0` (and the like in products) are 422; nothing is placed."""
    customer = edge.customer()
    edge.product(stock=100)
    for quantity in (True, "1", 1.0):
        body = {"customer_id": customer, "lines": [{"sku": "WIDGET", "quantity": quantity}]}
        _refused(edge.api.post("/orders", json=body), 422)
    line = {"sku": "WIDGET", "quantity": 1}
    _refused(edge.api.post("/orders", json={"customer_id": str(customer), "lines": [line]}), 422)
    product = {"sku": "P", "name": "P", "currency": "GBP", "weight_grams": 1, "stock": 1}
    for price in ("100", 100.0, True):
        _refused(edge.api.post("/products", json={**product, "price": price}), 422)
    assert edge.count(Order) == 0
    assert edge.api.get("/products/WIDGET").json()["stock"] == 100


def test_email_addresses_are_validated_and_stored_normalized(edge: Edge) -> None:
    """`xss.test+<b>@example.com` (which went to `RCPT TO: b`), display names and the like are
    422; a valid address is stored with its domain lower-cased."""
    for email in (
        "xss.test+<b>@example.com",
        "Ada <ada@example.com>",
        '"ada"@example.com',
        "ada@localhost",
        "ada@example",
        "ada@@example.com",
    ):
        body = {"name": "Ada", "email": email, "address": ADDRESS, "payment_method": "pm"}
        error = _refused(edge.api.post("/customers", json=body), 422)
        assert [p["field"] for p in error["problems"]] == ["email"], email
    customer = edge.customer(email="Ada.Lovelace+orders@EXAMPLE.com")
    assert edge.api.get(f"/customers/{customer}").json()["email"] == (
        "Ada.Lovelace+orders@example.com"
    )
    assert edge.count(Customer) == 1


def test_the_same_email_twice_is_409_naming_the_existing_customer(edge: Edge) -> None:
    """A second customer with an address already on file → 409 with the first one's id."""
    first = edge.customer(email="grace@example.com")
    for again in ("grace@example.com", "grace@EXAMPLE.COM", " grace@example.com "):
        body = {"name": "Grace", "email": again, "address": ADDRESS, "payment_method": "pm"}
        error = _refused(edge.api.post("/customers", json=body), 409)
        assert error["code"] == "customer_exists" and error["id"] == first, error
    assert edge.count(Customer) == 1


def test_the_same_email_at_once_from_many_clients_creates_one_customer(edge: Edge) -> None:
    """Eight simultaneous creations of one address: one 201, seven 409s naming it."""
    body = {"name": "Alan", "email": "alan@example.com", "address": ADDRESS, "payment_method": "p"}
    start = threading.Barrier(8)

    def create(_: int) -> httpx.Response:
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
            start.wait()
            return client.post(f"{edge.server.url}/api/v1/customers", json=body)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(create, range(8)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] + [409] * 7, [a.text for a in answers]
    [created] = [a.json()["id"] for a in answers if a.status_code == 201]
    assert {a.json()["error"]["id"] for a in answers if a.status_code == 409} == {created}
    assert edge.count(Customer) == 1


def test_only_currencies_the_payment_gateway_supports_are_accepted(edge: Edge) -> None:
    """A product in a currency Paydesk does not charge in could never be paid for: 422."""
    product = {"name": "P", "price": 100, "weight_grams": 1, "stock": 1}
    for code in ("XYZ", "ABC", "gbp"):
        body = {**product, "sku": f"P-{code}", "currency": code}
        _refused(edge.api.post("/products", json=body), 422)
    assert edge.api.post("/products", json={**product, "sku": "P", "currency": "EUR"}).is_success


def test_percent_and_underscore_in_a_search_match_themselves(edge: Edge) -> None:
    """`q=%` or `q=a_b` finds the customers whose names contain them, not everyone."""
    edge.customer(email="c1@example.com", name="100% Cotton")
    edge.customer(email="c2@example.com", name="1000 Cotton")
    edge.customer(email="c3@example.com", name="a_b")
    edge.customer(email="c4@example.com", name="axb")

    def names(q: str) -> list[str]:
        response = edge.api.get("/customers", params={"q": q})
        assert response.status_code == 200, response.text
        return sorted(c["name"] for c in response.json()["data"])

    assert names("%") == ["100% Cotton"]
    assert names("0%") == ["100% Cotton"]
    assert names("a_b") == ["a_b"]
    assert names("_") == ["a_b"]
    assert names("\\") == []
    assert names("cotton") == ["100% Cotton", "1000 Cotton"]


# --- orders by reference ---------------------------------------------------------------------


def test_orders_are_addressable_by_reference_everywhere_in_the_api(edge: Edge) -> None:
    """`ORD-000123` names the order in every order path, as the CLI and the console accept."""
    edge.product()
    order = edge.order(edge.customer())
    ref = order["reference"]
    for name in (ref, ref.lower(), str(order["id"])):
        got = edge.api.get(f"/orders/{name}")
        assert got.status_code == 200 and got.json()["id"] == order["id"], name
    for tail in ("audit", "investigation", "dispute-bundle"):
        assert edge.api.get(f"/orders/{ref}/{tail}").status_code == 200, tail
    patched = edge.api.patch(f"/orders/{ref}", json={"address": ADDRESS, "reason": "checked"})
    assert patched.status_code == 200, patched.text
    cancelled = edge.api.post(f"/orders/{ref}/cancel", json={"reason": "by reference"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    for unknown in ("ORD-999999", "ORD-", "ORD-12x", "nonsense"):
        _refused(edge.api.get(f"/orders/{unknown}"), 404)


# --- the carrier webhook ---------------------------------------------------------------------


def _webhook(
    edge: Edge, event: dict[str, Any], header: str | bytes | None = None
) -> httpx.Response:
    body = json.dumps(event).encode()
    signed = header if header is not None else sign(SECRET, body, int(time.time()))
    raw = signed if isinstance(signed, bytes) else signed.encode()  # bytes: any octets at all
    return httpx.post(
        f"{edge.server.url}/webhooks/bobs-post",
        content=body,
        headers={HEADER.encode(): raw, b"Content-Type": b"application/json"},
        timeout=30,
    )


EVENT = {
    "event_id": "bp_evt_1",
    "type": "shipment.status_changed",
    "shipment_id": "bp_shp_1",
    "reference": "ORD-000001",
    "status": "collected",
    "occurred_at": "2026-11-22T15:04:05Z",
}


def test_signed_webhooks_that_can_never_be_stored_are_422_not_500(edge: Edge) -> None:
    """Correctly signed, but an over-long or NUL event_id (or another field our columns cannot
    hold) is a 422 saying it is unreadable; a timestamp without an offset is UTC."""
    for field, value in (
        ("event_id", "e" * 201),
        ("event_id", "bp_evt_\x00"),
        ("event_id", ""),
        ("shipment_id", "s" * 101),
        ("reference", "r" * 65),
        ("status", "s" * 33),
        ("status", "collected\x00"),
        ("occurred_at", "yesterday"),
        ("occurred_at", "0001-01-01T00:00:00+01:00"),
    ):
        error = _refused(_webhook(edge, {**EVENT, field: value}), 422)
        assert error["message"].startswith("unreadable webhook"), (field, error)
    naive = _webhook(edge, {**EVENT, "occurred_at": "2026-11-22T15:04:05"})
    assert naive.status_code == 200 and naive.json()["status"] == "unmatched", naive.text


def test_malformed_signature_headers_are_401_not_500(edge: Edge) -> None:
    """A 401-digit `t` or a non-ASCII `v1` is a refused signature, like any other bad one."""
    digest = "0" * 64
    for header in (
        f"t={'9' * 401},v1={digest}",
        f"t={int(time.time())},v1=é{digest[1:]}".encode(),
        f"t={int(time.time())},v1={digest},v1=x",
        "t=,v1=",
    ):
        error = _refused(_webhook(edge, EVENT, header), 401)
        assert error["code"] == "bad_signature", header


# --- body size limit -----------------------------------------------------------------------


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """A body without Content-Length: httpx sends it chunked."""
    for _ in range(total // size):
        yield b"x" * size


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def test_over_limit_bodies_are_413_before_authentication_or_parsing(edge: Edge) -> None:
    """No token, no signature: a 50 MB body declared or streamed in chunks is 413 before any
    check or handler runs (the process keeps none of it), on the API, the webhook endpoint
    and any other route."""
    before = _rss_bytes()
    for path in ("/api/v1/orders", "/webhooks/bobs-post", "/api/v1/customers", "/probe"):
        streamed = httpx.post(f"{edge.server.url}{path}", content=_chunks(50 << 20), timeout=60)
        assert _refused(streamed, 413)["code"] == "body_too_large", path
        chunked = httpx.post(f"{edge.server.url}{path}", content=_chunks(5 << 20), timeout=60)
        _refused(chunked, 413)
    assert _rss_bytes() - before < 40 << 20  # 200 MB went by; at most a limit's worth is held
    with socket.create_connection(("127.0.0.1", edge.server.port), timeout=10) as raw:
        raw.sendall(
            b"POST /webhooks/bobs-post HTTP/1.1\r\nHost: x\r\nContent-Length: 52428800\r\n\r\n"
        )
        answer = raw.recv(4096)  # answered without a byte of the body being sent
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert edge.probe_calls == [] and edge.count(Order) == edge.count(Customer) == 0
    small = httpx.post(f"{edge.server.url}/probe", content=_chunks(256 << 10), timeout=30)
    assert small.status_code == 200 and edge.probe_calls == ["probe"]
    # Middleware added after it would run before it (an authentication layer, say).
    assert edge.app.user_middleware[0].cls is BodyLimit  # type: ignore[comparison-overlap]
