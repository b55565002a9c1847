"""Dead letters: evidence, grouping, fix-then-redrive, discard, and a bulk redrive of 1,000."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select, update

from orderflow.clock import now
from orderflow.orders import workflow
from orderflow.orders.models import Order
from orderflow.orders.service import LineRequest, place_order
from orderflow.tasks.models import Task
from tests.support.stack import ADDRESS, Stack, start_stack


def _dead_booking(stack: Stack, order_id: int) -> dict[str, object]:
    def dead() -> bool:
        letters = stack.api.get("/dead-letters", params={"step": "book"}).json()["data"]
        return any(d["order_id"] == order_id for d in letters)

    stack.work_until(dead)
    [letter] = [
        d for d in stack.api.get("/dead-letters").json()["data"] if d["order_id"] == order_id
    ]
    return dict(letter)


def test_refused_address_is_fixed_then_redriven_and_ships_once(stack: Stack) -> None:
    """A 422 booking is a dead letter with evidence; correct the address, redrive, shipped once."""
    customer = stack.customer(country="XX")
    stack.product("WIDGET", stock=5)
    order = stack.place(customer, [("WIDGET", 1)])
    letter = _dead_booking(stack, order["id"])
    assert "book · permanent" in str(letter["cause"])
    assert "422" in str(letter["cause"])

    detail = stack.api.get(f"/dead-letters/{letter['id']}").json()
    [attempt] = detail["attempt_log"]
    assert attempt["http_status"] == 422 and attempt["outcome"] == "permanent"
    assert attempt["duration_ms"] >= 0

    fixed = stack.api.patch(
        f"/orders/{order['id']}", json={"address": ADDRESS, "reason": "customer phoned"}
    )
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["ship_to"]["address"]["country"] == "GB"
    assert stack.api.post(f"/dead-letters/{letter['id']}/redrive").status_code == 200
    assert stack.api.post(f"/dead-letters/{letter['id']}/redrive").status_code == 409

    done = stack.work_until_status(order["id"], "delivered")
    assert stack.outside.carrier_stats()["bookings_by_reference"] == {order["reference"]: 1}
    actions = [h["action"] for h in done["history"]]
    assert actions.index("order.address_corrected") < actions.index("work.redriven")
    assert stack.api.get("/dead-letters").json()["total"] == 0


def test_address_correction_is_refused_once_booked_or_when_invalid(stack: Stack) -> None:
    """PATCH after booking is a 409; a malformed address is a 422; unknown order a 404."""
    stack.outside.carrier_switches(progress_seconds=3600)
    customer = stack.customer()
    stack.product("WIDGET", stock=5)
    order = stack.place(customer, [("WIDGET", 1)])
    assert (
        stack.api.patch(f"/orders/{order['id']}", json={"address": {"line1": "x"}}).status_code
        == 422
    )
    stack.work_until_status(order["id"], "scheduled")
    late = stack.api.patch(f"/orders/{order['id']}", json={"address": ADDRESS})
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "address_locked"
    assert stack.api.patch("/orders/999999", json={"address": ADDRESS}).status_code == 404


def test_discarding_a_dead_booking_cancels_refunds_and_tells_the_customer(stack: Stack) -> None:
    """Discard needs a reason; the order then takes its failure path."""
    customer = stack.customer(country="XX")
    stack.product("WIDGET", stock=5, price=1000)
    order = stack.place(customer, [("WIDGET", 2)])
    letter = _dead_booking(stack, order["id"])
    no_reason = stack.api.post(f"/dead-letters/{letter['id']}/discard", json={"reason": ""})
    assert no_reason.status_code == 422
    response = stack.api.post(
        f"/dead-letters/{letter['id']}/discard", json={"reason": "customer moved abroad"}
    )
    assert response.status_code == 200
    stack.work_until(
        lambda: (
            (stack.order(order["id"])["payment"] or {}).get("refund") is not None
            and bool(stack.order(order["id"])["notifications"])
        )
    )
    view = stack.order(order["id"])
    assert view["status"] == "cancelled"
    assert stack.api.get("/products/WIDGET").json()["stock"] == 5
    ref = order["reference"]
    assert stack.outside.paydesk_stats()["refunded_amount_by_order_reference"] == {ref: 2000}
    assert "cancelled" in stack.outside.mail.messages()[0].subject
    assert any(
        h["action"] == "work.discarded" and h["details"]["reason"] == "customer moved abroad"
        for h in view["history"]
    )


@pytest.fixture
def fast_carrier_stack(database_url: str) -> Iterator[Stack]:
    with start_stack(
        database_url, bobs_post_rate_limit=2000.0, worker_batch_size=200, worker_concurrency=32
    ) as s:
        s.outside.carrier_switches(
            rate_limit_per_second=5000, progress_seconds=3600, webhook_url=None
        )
        yield s


def test_bulk_redrive_of_1000_dead_letters_after_a_dry_run(fast_carrier_stack: Stack) -> None:
    """1,000 dead bookings: the dry run counts them; the paced redrive books each exactly once."""
    stack = fast_carrier_stack
    customer = stack.customer()
    stack.product("WIDGET", stock=5000)
    with stack.db.transaction() as session:
        ids = [
            place_order(
                session, customer_id=customer, lines=[LineRequest("WIDGET", 1)], actor="admin:test"
            )[0].id
            for _ in range(1000)
        ]
        # They were paid; their bookings died in an incident (e.g. a bad deploy).
        session.execute(update(Task).where(Task.kind == "charge").values(status="done"))
        session.execute(update(Order).values(status="paid"))
        for order_id in ids:
            workflow.book(session, order_id)
        session.execute(
            update(Task)
            .where(Task.kind == "book")
            .values(
                status="dead",
                attempts=1,
                error_class="poison",
                last_error="KeyError: 'tracking_number'",
                first_failed_at=now(),
                last_failed_at=now(),
                finished_at=now(),
            )
        )
    dry = stack.api.post("/dead-letters/redrive", json={"step": "book", "dry_run": True}).json()
    assert dry["would_redrive"] == 1000
    assert [g["count"] for g in dry["groups"]] == [1000]
    assert stack.api.get("/dead-letters").json()["total"] == 1000  # a dry run changes nothing

    started = stack.api.post(
        "/dead-letters/redrive", json={"step": "book", "batch": 250, "pace_seconds": 0.05}
    )
    assert started.status_code == 202
    progress_url = started.headers["Location"].removeprefix("/api/v1")
    began = time.monotonic()
    stack.work_until(lambda: stack.api.get(progress_url).json()["status"] == "finished", 120)
    stack.work_until(lambda: _booked(stack) == 1000, 120)
    assert stack.api.get(progress_url).json()["redriven"] == 1000
    bookings = stack.outside.carrier_stats()["bookings_by_reference"]
    assert len(bookings) == 1000 and set(bookings.values()) == {1}
    print(f"bulk redrive: 1000 dead letters redriven and booked in {time.monotonic() - began:.1f}s")


def _booked(stack: Stack) -> int:
    with stack.db.read() as session:
        return len(
            session.scalars(select(Task.id).where(Task.kind == "book", Task.status == "done")).all()
        )
