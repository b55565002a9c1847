"""Group commit and POST /orders/batch: many orders per transaction, each all or nothing."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from orderflow.audit import chain
from orderflow.audit.models import AuditEntry
from orderflow.db import Database
from orderflow.orders import placement, placement_write
from orderflow.orders.group_commit import GroupCommit
from orderflow.orders.models import Order, OrderLine
from orderflow.orders.placement import LineRequest, Placed, PlacementRequest, Refused
from orderflow.outbox import OutboxEvent
from orderflow.tasks.models import Task
from tests.support.stack import Stack


def _count(db: Database, model: Any) -> int:
    query = select(func.count()).select_from(model)
    if model is Task:  # order work only, not the worker's periodic jobs
        query = query.where(Task.order_id.is_not(None))
    with db.read() as session:
        return int(session.scalar(query) or 0)


def _stock(stack: Stack, sku: str) -> int:
    return int(stack.api.get(f"/products/{sku}").json()["stock"])


def _entry(key: str, customer: int, *lines: tuple[str, int]) -> dict[str, Any]:
    return {
        "idempotency_key": key,
        "customer_id": customer,
        "lines": [{"sku": s, "quantity": q} for s, q in lines],
    }


def test_one_bad_order_in_a_group_leaves_the_others_intact(stack: Stack) -> None:
    """Refused orders of a group write nothing; the accepted ones get everything."""
    customer = stack.customer()
    stack.product("AAA", stock=10)
    stack.product("ZZZ", stock=1)
    group = GroupCommit(stack.db)
    requests = [
        PlacementRequest(customer, [LineRequest("AAA", 2)], "admin:test", "g-1"),
        PlacementRequest(customer, [LineRequest("NOPE", 1)], "admin:test", "g-2"),
        PlacementRequest(customer, [LineRequest("AAA", 3), LineRequest("ZZZ", 2)], "admin:test"),
        PlacementRequest(424242, [LineRequest("AAA", 1)], "admin:test"),
        PlacementRequest(customer, [LineRequest("AAA", 0)], "admin:test"),
        PlacementRequest(customer, [LineRequest("AAA", 1), LineRequest("ZZZ", 1)], "admin:test"),
        PlacementRequest(customer, [LineRequest("ZZZ", 1)], "admin:test"),
    ]
    outcomes = group.run_group(requests)
    group.close()
    kinds = [
        o.error.status_code if isinstance(o, Refused) else 202 if isinstance(o, Placed) else o
        for o in outcomes
    ]
    assert kinds == [202, 422, 409, 422, 422, 202, 409]
    placed = [o for o in outcomes if isinstance(o, Placed)]
    assert _stock(stack, "AAA") == 10 - 2 - 1
    assert _stock(stack, "ZZZ") == 0
    assert _count(stack.db, Order) == 2
    assert _count(stack.db, OrderLine) == 3
    assert _count(stack.db, Task) == 2
    assert _count(stack.db, AuditEntry) == 2
    assert _count(stack.db, OutboxEvent) == 2
    for outcome in placed:
        assert stack.order(outcome.order_id) == outcome.view
        with stack.db.read() as session:
            assert chain.verify_order(session, outcome.order_id).ok


def test_a_group_that_fails_in_the_database_is_placed_again_one_by_one(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An order that breaks its group's transaction spoils only itself: the others are placed."""
    customer, poison = stack.customer(), stack.customer()
    stack.product("WIDGET", stock=10)
    real_add = placement._Writes.add

    def add(self: Any, order_id: int, r: PlacementRequest, *args: Any) -> dict[str, Any]:
        if r.customer_id == poison:
            raise RuntimeError("a bug that only this order triggers")
        return real_add(self, order_id, r, *args)

    monkeypatch.setattr(placement._Writes, "add", add)
    group = GroupCommit(stack.db)
    outcomes = group.run_group(
        [
            PlacementRequest(customer, [LineRequest("WIDGET", 1)], "admin:test", "p-1"),
            PlacementRequest(poison, [LineRequest("WIDGET", 1)], "admin:test", "p-2"),
            PlacementRequest(customer, [LineRequest("WIDGET", 2)], "admin:test", "p-3"),
        ]
    )
    group.close()
    assert isinstance(outcomes[0], Placed) and isinstance(outcomes[2], Placed)
    assert isinstance(outcomes[1], RuntimeError)
    assert _count(stack.db, Order) == 2
    assert _stock(stack, "WIDGET") == 7


def test_concurrent_posts_share_transactions_and_never_oversell(stack: Stack) -> None:
    """40 simultaneous POSTs for 25 in stock: exactly 25 accepted, each 202 body is its GET."""
    customer = stack.customer()
    stack.product("HOT", stock=25)
    barrier = threading.Barrier(40)
    url = str(stack.api.base_url)

    def post(i: int) -> httpx.Response:
        with httpx.Client(base_url=url, headers=stack.api.headers, timeout=30) as client:
            barrier.wait()
            body = {"customer_id": customer, "lines": [{"sku": "HOT", "quantity": 1}]}
            return client.post("/orders", json=body, headers={"Idempotency-Key": f"c-{i}"})

    with ThreadPoolExecutor(40) as pool:
        responses = list(pool.map(post, range(40)))
    accepted = [r for r in responses if r.status_code == 202]
    assert len(accepted) == 25
    assert {r.status_code for r in responses} == {202, 409}
    assert _stock(stack, "HOT") == 0
    assert _count(stack.db, Order) == 25
    for response in accepted:
        order = response.json()
        assert response.headers["Location"] == f"/api/v1/orders/{order['id']}"
        assert stack.order(order["id"]) == order


def test_batch_mixes_accepted_and_refused_orders_and_a_replay_creates_nothing(
    stack: Stack,
) -> None:
    """Each entry is answered as its own POST would be, in order; a replay adds nothing."""
    customer = stack.customer()
    stack.product("WIDGET", stock=10)
    stack.product("RARE", stock=1)
    entries: list[Any] = [
        _entry("b-1", customer, ("WIDGET", 2)),
        _entry("b-2", customer, ("NOPE", 1)),
        {
            "idempotency_key": "b-3",
            "customer_id": customer,
            "lines": [{"sku": "W", "quantity": "x"}],
        },
        "not an object",
        _entry("b-5", customer, ("RARE", 2)),
        {"customer_id": customer, "lines": [{"sku": "WIDGET", "quantity": 1}]},
        _entry("b-1", customer, ("WIDGET", 2)),
        _entry("b-1", customer, ("WIDGET", 3)),
        _entry("b-9", customer, ("WIDGET", 1), ("RARE", 1)),
        _entry("b-10", 424242, ("WIDGET", 1)),
    ]
    first = stack.api.post("/orders/batch", json={"orders": entries})
    assert first.status_code == 200, first.text
    results = first.json()["results"]
    assert [r["status"] for r in results] == [202, 422, 422, 422, 409, 422, 202, 409, 202, 422]
    assert results[1]["error"]["code"] == "invalid_request"
    assert results[4]["error"]["code"] == "insufficient_stock"
    assert results[7]["error"]["code"] == "idempotency_key_reused"
    assert results[6]["order"]["id"] == results[0]["order"]["id"]
    assert _stock(stack, "WIDGET") == 7 and _stock(stack, "RARE") == 0
    assert _count(stack.db, Order) == 2
    for r in (results[0], results[8]):
        assert stack.order(r["order"]["id"]) == r["order"]

    again = stack.api.post("/orders/batch", json={"orders": entries}).json()["results"]
    assert [r["status"] for r in again] == [202, 422, 422, 422, 409, 422, 202, 409, 202, 422]
    assert [r["order"]["id"] for r in again if r["status"] == 202] == [
        r["order"]["id"] for r in results if r["status"] == 202
    ]
    assert _count(stack.db, Order) == 2
    assert _count(stack.db, Task) == 2
    assert _stock(stack, "WIDGET") == 7

    single = stack.api.post(
        "/orders",
        json={"customer_id": customer, "lines": [{"sku": "WIDGET", "quantity": 2}]},
        headers={"Idempotency-Key": "b-1"},
    )
    assert single.status_code == 202 and single.json()["id"] == results[0]["order"]["id"]


def test_batch_of_more_than_1000_orders_is_refused_whole(stack: Stack) -> None:
    """Over the limit (or not a batch at all) is a 422 for the request, and nothing is placed."""
    customer = stack.customer()
    stack.product("WIDGET", stock=5000)
    entries = [_entry(f"big-{i}", customer, ("WIDGET", 1)) for i in range(1001)]
    too_many = stack.api.post("/orders/batch", json={"orders": entries})
    assert too_many.status_code == 422
    assert too_many.json()["error"]["code"] == "invalid_request"
    assert stack.api.post("/orders/batch", json=[1]).status_code == 422
    assert stack.api.post("/orders/batch", json={"orders": []}).status_code == 422
    assert _count(stack.db, Order) == 0
    full = stack.api.post("/orders/batch", json={"orders": entries[:1000]}, timeout=120)
    assert full.status_code == 200
    assert {r["status"] for r in full.json()["results"]} == {202}
    assert _stock(stack, "WIDGET") == 4000


def test_two_processes_racing_on_one_key_create_one_order(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two groups that both saw a key as new: the loser's INSERT fails, its retry replays."""
    if stack.db.is_sqlite:
        pytest.skip("SQLite serializes writers (BEGIN IMMEDIATE): two groups cannot race")
    customer = stack.customer()
    stack.product("WIDGET", stock=10)
    both_read = threading.Barrier(2, timeout=10)
    waited: set[int] = set()
    real_write = placement_write.write

    def write(*args: Any) -> None:
        if threading.get_ident() not in waited:  # first attempt only: both have read the key
            waited.add(threading.get_ident())
            both_read.wait()
        real_write(*args)

    monkeypatch.setattr(placement_write, "write", write)
    request = PlacementRequest(customer, [LineRequest("WIDGET", 3)], "admin:test", "race")
    groups = [GroupCommit(stack.db), GroupCommit(stack.db)]  # as two API processes
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda g: g.run_group([request])[0], groups))
    for group in groups:
        group.close()
    assert all(isinstance(o, Placed) for o in outcomes)
    placed = [o for o in outcomes if isinstance(o, Placed)]
    assert placed[0].order_id == placed[1].order_id
    assert sorted(o.created for o in placed) == [False, True]
    assert _count(stack.db, Order) == 1
    assert _stock(stack, "WIDGET") == 7
