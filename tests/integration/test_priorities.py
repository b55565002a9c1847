"""Priorities: orders placed one by one are worked before bulk intake's, and push back alone."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import select

from orderflow.backpressure import NORMAL, SHEDDING, Gauge, measure
from orderflow.clock import now
from orderflow.db import Database
from orderflow.tasks import queue
from orderflow.tasks.models import Priority, Task
from orderflow.tasks.retry import RetryPolicy
from orderflow.tasks.worker import Worker
from tests.integration.test_backpressure import Record
from tests.support.stack import Stack


def _due(db: Database, kind: str, key: str, seconds_ago: float, priority: Priority) -> None:
    with db.transaction() as session, queue.inheriting(priority):
        queue.enqueue(session, kind, key, run_at=now() - timedelta(seconds=seconds_ago))


def test_a_claim_takes_interactive_work_before_older_bulk_work(db: Database) -> None:
    """Bulk charges due for a minute wait behind an interactive one due a second ago."""
    for i in range(3):
        _due(db, "charge", f"bulk-{i}", 60 - i, Priority.BULK)
    _due(db, "charge", "interactive", 1, Priority.INTERACTIVE)
    with db.transaction() as session:
        first = queue.claim(session, token="w/1", limit=2, lease_seconds=30)
        rest = queue.claim(session, token="w/2", limit=10, lease_seconds=30)
    assert sorted(t.key for t in first) == ["bulk-0", "interactive"]
    assert [t.priority for t in first if t.key == "interactive"] == [Priority.INTERACTIVE]
    assert sorted(t.key for t in rest) == ["bulk-1", "bulk-2"]  # oldest first within bulk


def test_an_expired_lease_is_taken_over_before_due_work(db: Database) -> None:
    """A dead worker's task comes back first, and a claim never takes more than its limit."""
    _due(db, "charge", "crashed", 5, Priority.BULK)
    with db.transaction() as session:
        [lost] = queue.claim(session, token="dead/1", limit=1, lease_seconds=0.05)
    _due(db, "charge", "fresh-0", 30, Priority.INTERACTIVE)
    _due(db, "charge", "fresh-1", 30, Priority.INTERACTIVE)
    time.sleep(0.1)
    with db.transaction() as session:
        [again] = queue.claim(session, token="w/1", limit=1, lease_seconds=30)
        both = queue.claim(session, token="w/2", limit=5, lease_seconds=30)
    assert (again.key, again.attempts) == ("crashed", 2) and lost.key == "crashed"
    assert sorted(t.key for t in both) == ["fresh-0", "fresh-1"]


def test_bulk_backlog_sheds_bulk_intake_only(db: Database) -> None:
    """Bulk payments 40 s behind: bulk intake sheds, interactive intake stays normal."""
    _due(db, "charge", "bulk", 40, Priority.BULK)
    _due(db, "charge", "interactive", 1, Priority.INTERACTIVE)
    with db.read() as session:
        pressure = measure(session, 10, 30)
    assert pressure.state == SHEDDING
    assert pressure.of(Priority.BULK).state == SHEDDING
    assert pressure.of(Priority.INTERACTIVE).state == NORMAL
    _due(db, "charge", "old-interactive", 45, Priority.INTERACTIVE)
    with db.read() as session:
        assert measure(session, 10, 30).of(Priority.INTERACTIVE).state == SHEDDING


def test_a_batch_orders_work_stays_bulk_from_charge_to_booking(stack: Stack) -> None:
    """Orders from /orders/batch are bulk, and what their steps queue inherits it; the e-mail a
    carrier webhook queues is interactive (it comes at the carrier's pace, as the README says)."""
    customer = stack.customer()
    stack.product("WIDGET", stock=10)
    line = [{"sku": "WIDGET", "quantity": 1}]
    batch = {"orders": [{"idempotency_key": "b-1", "customer_id": customer, "lines": line}]}
    response = stack.api.post("/orders/batch", json=batch)
    bulk_id = response.json()["results"][0]["order"]["id"]
    single_id = stack.place(customer, [("WIDGET", 1)])["id"]
    stack.work_until_status(bulk_id, "delivered")
    stack.work_until_status(single_id, "scheduled", "shipped", "delivered")
    with stack.db.read() as session:
        rows = session.execute(select(Task.order_id, Task.kind, Task.priority)).all()
    priorities = {(order, kind): p for order, kind, p in rows if order is not None}
    assert priorities[(bulk_id, "charge")] == priorities[(bulk_id, "book")] == Priority.BULK
    assert priorities[(bulk_id, "track")] == Priority.BULK  # queued by the booking step
    assert priorities[(bulk_id, "notify")] == Priority.INTERACTIVE  # queued by a webhook
    assert priorities[(single_id, "charge")] == Priority.INTERACTIVE
    assert priorities[(single_id, "book")] == Priority.INTERACTIVE


def test_a_bulk_backlog_refuses_batches_but_not_single_orders(stack: Stack) -> None:
    """Bulk payments an hour behind: batches get 429, POST /orders still 202; metrics say so."""
    customer = stack.customer()
    stack.product("WIDGET", stock=5)
    _due(stack.db, "charge", "bulk-old", 3600, Priority.BULK)
    time.sleep(1.1)  # the API measures the pressure at most once a second
    line = [{"sku": "WIDGET", "quantity": 1}]
    batch = {"orders": [{"idempotency_key": "k", "customer_id": customer, "lines": line}]}
    refused = stack.api.post("/orders/batch", json=batch)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    stack.place(customer, [("WIDGET", 1)])  # asserts 202
    pressure = stack.api.get("/backpressure").json()
    assert (pressure["state"], pressure["interactive"]["state"]) == ("shedding", "normal")
    metrics = stack.api.get(f"{stack.server.url}/metrics").text
    assert 'orderflow_backpressure_state{state="shedding"} 1.0' in metrics
    assert 'orderflow_backpressure_interactive_state{state="normal"} 1.0' in metrics


def test_behind_on_payments_lanes_come_first_then_priorities(db: Database) -> None:
    """Bulk charges 20 s behind: they go before an interactive e-mail, which goes before an
    older bulk e-mail (payments first, as the lanes say; interactive first within a lane)."""
    _due(db, "notify", "bulk-mail", 60, Priority.BULK)
    _due(db, "charge", "bulk-charge", 20, Priority.BULK)
    _due(db, "notify", "interactive-mail", 1, Priority.INTERACTIVE)
    seen: list[str] = []
    steps = {kind: Record(kind, seen) for kind in ("charge", "notify")}
    gauge = Gauge(db, 10, 3600)
    worker = Worker(
        db, steps, retry=RetryPolicy(0.05, 0.2), lease_seconds=5, batch_size=1, pressure=gauge
    )
    assert [worker.run_once() for _ in range(4)] == [1, 1, 1, 0]
    assert seen == ["bulk-charge", "interactive-mail", "bulk-mail"]
