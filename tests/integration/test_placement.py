"""Placing orders: checks before the 202, atomic stock reservation, Idempotency-Key semantics."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import func, select

from orderflow.audit import chain
from orderflow.orders.models import Order
from orderflow.tasks.models import Task
from tests.support.stack import Stack


def _order_count(stack: Stack) -> int:
    with stack.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(Order)) or 0)


def test_accepted_order_has_reserved_stock_history_and_its_first_task(stack: Stack) -> None:
    """A 202 means: order + lines + stock reservation + history entry + charge task, together."""
    customer = stack.customer()
    stack.product("WIDGET", stock=10, price=1299)
    stack.product("GADGET", stock=5, price=2599)
    response = stack.api.post(
        "/orders",
        json={
            "customer_id": customer,
            "lines": [{"sku": "WIDGET", "quantity": 2}, {"sku": "GADGET", "quantity": 1}],
        },
    )
    assert response.status_code == 202
    order = response.json()
    assert response.headers["Location"] == f"/api/v1/orders/{order['id']}"
    assert order["reference"] == f"ORD-{order['id']:06d}"
    assert order["total"] == 2 * 1299 + 2599
    assert order["ship_to"]["address"]["postcode"] == "SW1Y 4JH"
    assert stack.api.get("/products/WIDGET").json()["stock"] == 8
    assert stack.api.get("/products/GADGET").json()["stock"] == 4
    assert [h["action"] for h in order["history"]] == ["order.placed"]
    with stack.db.read() as session:
        tasks = session.scalars(select(Task).where(Task.order_id == order["id"])).all()
        assert [(t.kind, t.status) for t in tasks] == [("charge", "ready")]
        assert chain.verify_order(session, order["id"]).ok


def test_bad_orders_are_refused_before_the_answer_and_leave_nothing_behind(stack: Stack) -> None:
    """Unknown customer/SKU, bad quantities, non-objects → 422; short stock → 409; no rows."""
    customer = stack.customer()
    stack.product("WIDGET", stock=3)
    cases = [
        ({"customer_id": 999_999, "lines": [{"sku": "WIDGET", "quantity": 1}]}, 422),
        ({"customer_id": customer, "lines": [{"sku": "NOPE", "quantity": 1}]}, 422),
        ({"customer_id": customer, "lines": [{"sku": "WIDGET", "quantity": 0}]}, 422),
        ({"customer_id": customer, "lines": [{"sku": "WIDGET", "quantity": -2}]}, 422),
        ({"customer_id": customer, "lines": []}, 422),
        ({"customer_id": customer, "lines": [{"sku": "WIDGET", "quantity": "x"}]}, 422),
        ({"customer_id": customer}, 422),
        ([1, 2, 3], 422),
        ("just a string", 422),
        ({"customer_id": customer, "lines": [{"sku": "WIDGET", "quantity": 4}]}, 409),
    ]
    for body, status in cases:
        response = stack.api.post("/orders", json=body)
        assert response.status_code == status, (body, response.text)
        error = response.json()["error"]
        assert error["code"] and error["message"], response.text
    not_json = stack.api.post(
        "/orders", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 422
    assert _order_count(stack) == 0
    assert stack.api.get("/products/WIDGET").json()["stock"] == 3


def test_insufficient_stock_on_one_line_reserves_nothing_on_the_others(stack: Stack) -> None:
    """Reservation is all or nothing across lines."""
    customer = stack.customer()
    stack.product("AAA", stock=10)
    stack.product("ZZZ", stock=1)
    response = stack.api.post(
        "/orders",
        json={
            "customer_id": customer,
            "lines": [{"sku": "AAA", "quantity": 5}, {"sku": "ZZZ", "quantity": 2}],
        },
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "insufficient_stock"
    assert stack.api.get("/products/AAA").json()["stock"] == 10


def test_same_idempotency_key_same_body_returns_the_same_order(stack: Stack) -> None:
    """A retried POST creates nothing new; a reused key with another body is a 409."""
    customer = stack.customer()
    stack.product("WIDGET", stock=10)
    first = stack.place(customer, [("WIDGET", 1)], key="k-1")
    again = stack.place(customer, [("WIDGET", 1)], key="k-1")
    assert again["id"] == first["id"]
    other = stack.api.post(
        "/orders",
        json={"customer_id": customer, "lines": [{"sku": "WIDGET", "quantity": 2}]},
        headers={"Idempotency-Key": "k-1"},
    )
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    no_key = stack.place(customer, [("WIDGET", 1)])
    assert no_key["id"] != first["id"]
    assert stack.api.get("/products/WIDGET").json()["stock"] == 8
    assert _order_count(stack) == 2


def test_concurrent_duplicate_posts_create_one_order(stack: Stack) -> None:
    """Twelve simultaneous POSTs with one key: one order, one reservation, all get its id."""
    customer = stack.customer()
    stack.product("WIDGET", stock=100)
    barrier = threading.Barrier(12)
    body = {"customer_id": customer, "lines": [{"sku": "WIDGET", "quantity": 3}]}

    def post(_: int) -> httpx.Response:
        with httpx.Client(
            base_url=str(stack.api.base_url), headers=stack.api.headers, timeout=30
        ) as client:
            barrier.wait()
            return client.post("/orders", json=body, headers={"Idempotency-Key": "dup"})

    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(post, range(12)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    assert _order_count(stack) == 1
    assert stack.api.get("/products/WIDGET").json()["stock"] == 97


def test_api_requires_the_admin_token_and_answers_json_errors(stack: Stack) -> None:
    """401 without or with a wrong token; 404 for unknown ids; errors are JSON."""
    url = str(stack.api.base_url).rstrip("/")
    assert httpx.get(f"{url}/orders/1").status_code == 401
    wrong = httpx.get(f"{url}/orders/1", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "unauthorized"
    missing = stack.api.get("/orders/424242")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert stack.api.get("/customers/424242").status_code == 404
    assert stack.api.get("/products/NOPE").status_code == 404
    assert stack.api.post("/orders/424242/cancel").status_code == 404


def test_customers_and_products_validate_and_search(stack: Stack) -> None:
    """Bad customers/products are 422, a duplicate SKU is 409, customers can be searched."""
    bad_customer = {"name": "X", "email": "not-an-email", "address": {}, "payment_method": "pm"}
    assert stack.api.post("/customers", json=bad_customer).status_code == 422
    stack.product("WIDGET")
    dup = stack.api.post(
        "/products",
        json={
            "sku": "WIDGET",
            "name": "W",
            "price": 1,
            "currency": "GBP",
            "weight_grams": 1,
            "stock": 1,
        },
    )
    assert dup.status_code == 409
    bad = stack.api.post(
        "/products",
        json={
            "sku": "P2",
            "name": "W",
            "price": 0,
            "currency": "GBP",
            "weight_grams": 1,
            "stock": 1,
        },
    )
    assert bad.status_code == 422
    cid = stack.customer()
    found = stack.api.get("/customers", params={"q": "lovelace"}).json()["data"]
    assert [c["id"] for c in found] == [cid]
    assert stack.api.get("/customers", params={"q": "nobody"}).json()["data"] == []


def test_orders_list_filters_and_paginates(stack: Stack) -> None:
    """GET /orders filters by status and customer and pages with a cursor."""
    a, b = stack.customer(), stack.customer()
    stack.product("WIDGET", stock=100)
    ids = [stack.place(a, [("WIDGET", 1)])["id"] for _ in range(3)]
    ids.append(stack.place(b, [("WIDGET", 1)])["id"])
    page = stack.api.get("/orders", params={"limit": 2}).json()
    assert [o["id"] for o in page["data"]] == [ids[3], ids[2]]
    rest = stack.api.get("/orders", params={"limit": 2, "before": page["next_before"]}).json()
    assert [o["id"] for o in rest["data"]] == [ids[1], ids[0]]
    assert rest["next_before"] is None
    mine = stack.api.get("/orders", params={"customer_id": b}).json()["data"]
    assert [o["id"] for o in mine] == [ids[3]]
    assert len(stack.api.get("/orders", params={"status": "placed"}).json()["data"]) == 4
    assert stack.api.get("/orders", params={"status": "shipped"}).json()["data"] == []
    assert stack.api.get("/orders", params={"status": "bogus"}).status_code == 422
