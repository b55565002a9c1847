"""The Paydesk simulator over real HTTP: charges, declines, refunds, idempotency and switches."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from orderflow.serving import BackgroundServer
from orderflow.simulators.paydesk import PaydeskSwitches, create_app

API_KEY = "pd-test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}

Start = Callable[..., httpx.Client]


@pytest.fixture
def start() -> Iterator[Start]:
    """Start a simulator with the given switches; returns an authenticated client to it."""
    stack: list[tuple[BackgroundServer, httpx.Client]] = []

    def _start(**switches: Any) -> httpx.Client:
        app = create_app(api_key=API_KEY, switches=PaydeskSwitches(**switches))
        server = BackgroundServer(app).start()
        client = httpx.Client(base_url=server.url, headers=AUTH, timeout=5)
        stack.append((server, client))
        return client

    yield _start
    for server, client in stack:
        client.close()
        server.stop()


def charge_body(method: str = "pm_ok_visa", order: str = "ORD-000123", **over: Any) -> Any:
    body = {
        "amount": 2599,
        "currency": "GBP",
        "payment_method": method,
        "customer_reference": "CUS-000042",
        "order_reference": order,
        "description": f"Order {order}",
    }
    return {**body, **over}


def charge(client: httpx.Client, key: str, body: Any = None) -> httpx.Response:
    return client.post("/v1/payments", json=body or charge_body(), headers={"Idempotency-Key": key})


def refund(client: httpx.Client, key: str, payment_id: str, amount: int | None) -> httpx.Response:
    body: dict[str, Any] = {"payment_id": payment_id, "reason": "out_of_stock"}
    if amount is not None:
        body["amount"] = amount
    return client.post("/v1/refunds", json=body, headers={"Idempotency-Key": key})


def stats(client: httpx.Client) -> dict[str, Any]:
    return dict(client.get("/_sim/stats").json())


def test_a_missing_or_wrong_key_gets_401(start: Start) -> None:
    """Every /v1 call needs `Authorization: Bearer <secret_key>`."""
    client = start()
    no_auth = {"Authorization": "Bearer wrong", "Idempotency-Key": "k1"}
    assert client.post("/v1/payments", json=charge_body(), headers=no_auth).status_code == 401
    anonymous = {"Authorization": ""}
    assert client.get("/v1/payments?order_reference=x", headers=anonymous).status_code == 401
    assert stats(client)["charges_by_order_reference"] == {}


def test_a_charge_answers_201_in_the_contract_shape(start: Start) -> None:
    """`pm_ok_…` succeeds: 201 with pay_ id, succeeded, amount, currency, order and timestamp."""
    client = start()
    response = charge(client, "k1")
    assert response.status_code == 201
    body = response.json()
    assert re.fullmatch(r"pay_[0-9a-f]{32}", body["id"]) and body["status"] == "succeeded"
    assert (body["amount"], body["currency"]) == (2599, "GBP")
    assert body["order_reference"] == "ORD-000123"
    assert body["created_at"].endswith("Z")


def test_same_key_same_body_replays_and_never_charges_twice(start: Start) -> None:
    """A replay returns the original payment (marked Idempotent-Replayed); one charge counted."""
    client = start()
    first, again = charge(client, "k1"), charge(client, "k1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert stats(client)["charges_by_order_reference"] == {"ORD-000123": 1}


def test_same_key_different_body_is_409_and_missing_key_is_400(start: Start) -> None:
    """A reused key with another body is a conflict; a charge without a key is refused."""
    client = start()
    assert charge(client, "k1").status_code == 201
    assert charge(client, "k1", charge_body(amount=100)).status_code == 409
    assert client.post("/v1/payments", json=charge_body()).status_code == 400
    assert client.post("/v1/refunds", json={"payment_id": "p"}).status_code == 400
    assert stats(client)["charges_by_order_reference"] == {"ORD-000123": 1}


@pytest.mark.parametrize(
    ("method", "code"),
    [
        ("pm_declined", "card_declined"),
        ("pm_insufficient_funds", "insufficient_funds"),
        ("pm_fraud", "fraudulent"),
        ("pm_expired_card", "expired_card"),
    ],
)
def test_a_decline_is_402_and_replayed_on_the_same_key(
    start: Start, method: str, code: str
) -> None:
    """The test methods decline with their code; the same key replays the 402, charging nothing."""
    client = start()
    first = charge(client, "k1", charge_body(method))
    again = charge(client, "k1", charge_body(method))
    assert first.status_code == again.status_code == 402
    error = first.json()["error"]
    assert error["type"] == "card_error" and error["code"] == code
    assert again.json() == first.json()
    s = stats(client)
    assert s["charges_by_order_reference"] == {}
    assert s["declines_by_order_reference"] == {"ORD-000123": 1}


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"amount": 0}, "amount"),
        ({"amount": -5}, "amount"),
        ({"currency": "XYZ"}, "currency"),
        ({"payment_method": "pm_4242"}, "payment_method"),
        ({"order_reference": ""}, "order_reference"),
    ],
)
def test_an_invalid_charge_is_422_naming_the_field(
    start: Start, over: dict[str, Any], field: str
) -> None:
    """Amount ≤ 0, a bad currency or an unknown payment method: 422, nothing charged."""
    client = start()
    response = charge(client, "k1", charge_body(**over))
    assert response.status_code == 422 and response.json()["error"]["field"] == field
    assert stats(client)["charges_by_order_reference"] == {}


def test_declined_attempts_show_as_failed_in_the_lookup(start: Start) -> None:
    """`?order_reference=` lists every attempt: the decline as `failed`, the charge `succeeded`."""
    client = start()
    charge(client, "k1", charge_body("pm_declined"))
    paid = charge(client, "k2", charge_body("pm_ok_visa")).json()
    charge(client, "k3", charge_body(order="ORD-OTHER"))
    found = client.get("/v1/payments", params={"order_reference": "ORD-000123"}).json()["data"]
    assert [p["status"] for p in found] == ["failed", "succeeded"]
    assert found[0]["failure_code"] == "card_declined" and found[1]["id"] == paid["id"]
    assert client.get("/v1/payments", params={"order_reference": "none"}).json() == {"data": []}


def test_refunds_partial_full_replayed_and_over_the_limit(start: Start) -> None:
    """Refund part, replay it (no second refund), refund the rest; more than is left is 422."""
    client = start()
    paid = charge(client, "k1").json()
    part = refund(client, "r1", paid["id"], 1000)
    assert part.status_code == 201 and part.json()["status"] == "succeeded"
    assert part.json()["id"].startswith("re_") and part.json()["amount"] == 1000
    assert refund(client, "r1", paid["id"], 1000).json() == part.json()
    too_much = refund(client, "r2", paid["id"], 1600)
    assert too_much.status_code == 422 and too_much.json()["error"]["field"] == "amount"
    rest = refund(client, "r3", paid["id"], None)
    assert rest.status_code == 201 and rest.json()["amount"] == 1599
    assert refund(client, "r4", paid["id"], 1).status_code == 422
    s = stats(client)
    assert s["refunds_by_payment"] == {paid["id"]: 2}
    assert s["refunded_amount_by_order_reference"] == {"ORD-000123": 2599}


def test_refunding_an_unknown_or_failed_payment_is_422(start: Start) -> None:
    """An unknown payment id, or a declined attempt, cannot be refunded: 422 on payment_id."""
    client = start()
    declined = charge(client, "k1", charge_body("pm_declined")).json()["error"]["payment_id"]
    for n, payment_id in enumerate(["pay_nope", declined]):
        response = refund(client, f"r{n}", payment_id, 100)
        assert response.status_code == 422 and response.json()["error"]["field"] == "payment_id"


def test_an_ambiguous_504_still_charges_once(start: Start) -> None:
    """The client sees 504, yet the lookup finds the charge and the retry returns it, once."""
    client = start(ambiguous_rate=1.0)
    assert charge(client, "k1").status_code == 504
    client.patch("/_sim/switches", json={"ambiguous_rate": 0})
    found = client.get("/v1/payments", params={"order_reference": "ORD-000123"}).json()["data"]
    assert [p["status"] for p in found] == ["succeeded"]
    again = charge(client, "k1")
    assert again.status_code == 201 and again.json()["id"] == found[0]["id"]
    assert stats(client)["charges_by_order_reference"] == {"ORD-000123": 1}


def test_an_ambiguous_hang_still_charges(start: Start) -> None:
    """In `hang` mode the client times out, yet the charge happened."""
    client = start(ambiguous_rate=1.0, ambiguous_mode="hang", hang_seconds=0.6)
    with pytest.raises(httpx.ReadTimeout):
        client.post(
            "/v1/payments", json=charge_body(), headers={"Idempotency-Key": "k1"}, timeout=0.2
        )
    assert stats(client)["charges_by_order_reference"] == {"ORD-000123": 1}


def test_outages_answer_503_or_hang(start: Start) -> None:
    """`outage: 503` refuses every call at once; `outage: hang` outlasts the client's patience."""
    client = start(outage="503")
    assert charge(client, "k1").status_code == 503
    client.patch("/_sim/switches", json={"outage": "hang", "hang_seconds": 0.6})
    with pytest.raises(httpx.ReadTimeout):
        client.get("/v1/payments", params={"order_reference": "x"}, timeout=0.2)
    client.patch("/_sim/switches", json={"outage": None})
    assert charge(client, "k1").status_code == 201


def test_over_the_rate_limit_is_429_with_retry_after(start: Start) -> None:
    """Above `rate_limit_per_second` per key: 429 with Retry-After; counted in the stats."""
    client = start(rate_limit_per_second=4)
    answers = [client.get("/v1/payments", params={"order_reference": "x"}) for _ in range(10)]
    limited = [r for r in answers if r.status_code == 429]
    assert 4 <= len(limited) <= 6 and all(int(r.headers["Retry-After"]) >= 1 for r in limited)
    s = stats(client)
    assert s["requests"] == 10 and s["requests_by_status"]["429"] == len(limited)


def test_error_rate_answers_5xx_and_charges_nothing(start: Start) -> None:
    """With error_rate 1 every call is a 500/502/503, before any charge is made."""
    client = start(error_rate=1.0, seed=5)
    codes = {charge(client, f"k{i}").status_code for i in range(8)}
    assert codes and codes <= {500, 502, 503}
    assert stats(client)["charges_by_order_reference"] == {}


def test_reset_forgets_payments_and_keys(start: Start) -> None:
    """After POST /_sim/reset, the same key charges afresh and the counts start again."""
    client = start()
    charge(client, "k1")
    client.post("/_sim/reset")
    assert stats(client)["requests"] == 0
    assert charge(client, "k1").headers.get("Idempotent-Replayed") is None
    assert stats(client)["charges_by_order_reference"] == {"ORD-000123": 1}
