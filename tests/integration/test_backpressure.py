"""Backpressure: payments falling behind slow intake down; lanes order the workers' claims."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from orderflow.backpressure import NORMAL, SHEDDING, WARNING, Gauge, measure
from orderflow.clock import now
from orderflow.db import Database
from orderflow.dependencies import health
from orderflow.dependencies.models import Dependency
from orderflow.intake.consumer import IntakeConsumer
from orderflow.tasks import queue
from orderflow.tasks.queue import ClaimedTask
from orderflow.tasks.retry import RetryPolicy
from orderflow.tasks.worker import Worker
from tests.support.stack import Stack


def _due(db: Database, kind: str, key: str, seconds_ago: float) -> None:
    with db.transaction() as session:
        queue.enqueue(session, kind, key, run_at=now() - timedelta(seconds=seconds_ago))


def test_pressure_follows_the_oldest_due_payment_but_not_an_outage(db: Database) -> None:
    """A payment due 12 s ago is a warning, 40 s shedding; waiting on a Paydesk outage is not."""
    with db.read() as session:
        assert measure(session, 10, 30).state == NORMAL
    _due(db, "notify", "old-mail", 3600)  # low lanes never push back
    _due(db, "charge", "c-1", 12)
    with db.read() as session:
        assert measure(session, 10, 30).state == WARNING
    _due(db, "charge", "c-2", 40)
    with db.read() as session:
        pressure = measure(session, 10, 30)
    assert pressure.state == SHEDDING and pressure.oldest_due_seconds >= 40
    assert pressure.retry_after == 4
    with db.transaction() as session:
        health.ensure(session, ["paydesk"])
        session.execute(update(Dependency).values(state="open"))
    with db.read() as session:
        assert measure(session, 10, 30).state == NORMAL


def test_pressure_is_shown_in_the_api_and_the_metrics(stack: Stack) -> None:
    """GET /backpressure, GET /dependencies and /metrics all say 'shedding' when it is."""
    _due(stack.db, "charge", "c-old", 3600)
    pressure = stack.api.get("/backpressure").json()
    assert (pressure["state"], pressure["shedding_seconds"]) == ("shedding", 30.0)
    assert stack.api.get("/dependencies").json()["backpressure"]["state"] == "shedding"
    metrics = stack.api.get(f"{stack.server.url}/metrics").text
    assert 'orderflow_backpressure_state{state="shedding"} 1.0' in metrics
    assert 'orderflow_backpressure_state{state="normal"} 0.0' in metrics


class Record:
    """A step that only notes the order in which it was given work."""

    dependency = None

    def __init__(self, kind: str, seen: list[str]) -> None:
        self.kind = kind
        self.seen = seen

    def prepare(self, session: Session, task: ClaimedTask) -> str:
        return task.key

    def perform(self, work: str) -> str:
        return work

    def complete(self, session: Session, task: ClaimedTask, result: Any) -> None:
        self.seen.append(result)


def test_behind_on_payments_the_worker_claims_lane_by_lane(db: Database) -> None:
    """E-mails due long before two charges wait while payments are behind; when not, age wins."""
    for i in range(2):
        _due(db, "notify", f"mail-{i}", 60)
    for i in range(2):
        _due(db, "charge", f"charge-{i}", 20)
    seen: list[str] = []
    steps = {kind: Record(kind, seen) for kind in ("charge", "notify")}

    def worker(strict_lanes_seconds: float) -> Worker:
        gauge = Gauge(db, 10, 3600)
        policy = RetryPolicy(0.05, 0.2)
        return Worker(
            db,
            steps,
            retry=policy,
            lease_seconds=5,
            batch_size=2,
            pressure=gauge,
            strict_lanes_seconds=strict_lanes_seconds,
        )

    assert worker(strict_lanes_seconds=10).run_once() == 2
    assert sorted(seen) == ["charge-0", "charge-1"]  # strictly lane by lane: payments first
    _due(db, "charge", "charge-2", 20)
    seen.clear()
    assert worker(strict_lanes_seconds=3600).run_once() == 2
    assert sorted(seen) == ["mail-0", "mail-1"]  # normal: oldest first, whatever the lane


def test_the_queue_intake_takes_fewer_messages_while_payments_are_behind(db: Database) -> None:
    """Prefetch: full when normal, a tenth on warning, one message at a time while shedding."""
    consumer = IntakeConsumer(
        db, "amqp://unused", "q", prefetch=1000, pressure=Gauge(db, 10, 30, refresh_seconds=0)
    )
    asyncio.run(consumer._follow_pressure())
    assert consumer.prefetch == 1000
    _due(db, "charge", "c-1", 15)
    asyncio.run(consumer._follow_pressure())
    assert consumer.prefetch == 100
    _due(db, "charge", "c-2", 45)
    asyncio.run(consumer._follow_pressure())
    assert consumer.prefetch == 1


def test_shedding_answers_new_orders_429_with_retry_after_and_writes_nothing(stack: Stack) -> None:
    """Payments an hour behind: POST /orders and /orders/batch are 429 + Retry-After, no order."""
    customer = stack.customer()
    stack.product("WIDGET", stock=5)
    stack.place(customer, [("WIDGET", 1)])  # accepted while normal
    _due(stack.db, "charge", "c-old", 3600)
    body = {"customer_id": customer, "lines": [{"sku": "WIDGET", "quantity": 1}]}
    time.sleep(1.1)  # the API measures the pressure at most once a second
    refused = stack.api.post("/orders", json=body)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "throttled"
    assert int(refused.headers["Retry-After"]) >= 1
    batch = stack.api.post("/orders/batch", json={"orders": [{**body, "idempotency_key": "k"}]})
    assert batch.status_code == 429
    assert len(stack.api.get("/orders").json()["data"]) == 1
