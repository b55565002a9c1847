"""Queue intake: orders from RabbitMQ placed once each, refusals kept as dead letters, acks last."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError, ProgrammingError

from orderflow.catalog.models import Product
from orderflow.catalog.service import create_product
from orderflow.config import Settings
from orderflow.db import Database
from orderflow.deadletters import service as dead_letters
from orderflow.intake import refusals
from orderflow.intake.bench import placed_count, publish_orders
from orderflow.intake.consumer import IntakeConsumer
from orderflow.intake.group import GroupCommit, Inbound, Outcome
from orderflow.intake.messages import raw_body
from orderflow.intake.step import IntakeStep
from orderflow.orders import placement
from orderflow.orders.models import Order
from orderflow.serving import BackgroundServer
from orderflow.tasks.models import Task, TaskAttempt
from orderflow.tasks.retry import RetryPolicy
from orderflow.tasks.worker import Worker
from orderflow.web.app import create_app
from tests.support.intake import (
    BROKER,
    arrange_catalog,
    close_connection,
    fresh_queue,
    message,
    queue_depth,
)


@pytest.fixture
def intake_queue() -> Iterator[str]:
    """A fresh queue name, deleted afterwards."""
    with fresh_queue() as name:
        yield name


@pytest.fixture
def customer(db: Database) -> int:
    """A customer and two products: WIDGET (plenty) and RARE (2 in stock)."""
    return arrange_catalog(db, {"WIDGET": 10_000, "RARE": 2})


@contextmanager
def consuming(db: Database, queue: str, **knobs: Any) -> Iterator[IntakeConsumer]:
    """An intake consumer on its own thread; stopped (group in hand settled) afterwards."""
    consumer = IntakeConsumer(db, BROKER, queue, **knobs)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield consumer
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the consumer did not stop"


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def count(db: Database, model: type[Any], *where: Any) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def intake_letters(db: Database) -> int:
    return count(db, Task, Task.kind == "intake")


def test_one_group_places_the_good_and_keeps_every_refusal(
    db: Database, customer: int, intake_queue: str
) -> None:
    """Valid → one order each; replay → nothing; reused key, bad JSON, no key, unknown SKU,
    short stock, non-UTF-8 → dead letters with raw body and reason; all in one group, all acked."""
    good = [message(f"good-{i}", customer, ("WIDGET", 1)) for i in range(5)]
    bad: list[dict[str, Any] | bytes] = [
        message("good-0", customer, ("WIDGET", 2)),  # same key, other body: 409
        b'{"idempotency_key": "broken", "customer_id": ',
        message(None, customer, ("WIDGET", 1)),
        message("unknown-sku", customer, ("NOPE", 1)),
        message("short-stock", customer, ("RARE", 3)),
        b"\xff\xfe not text",
    ]
    publish_orders(BROKER, intake_queue, [*good, good[0], *bad])  # good[0] twice: a replay

    with consuming(db, intake_queue) as consumer:
        wait_for(lambda: consumer.groups >= 1)
    assert consumer.groups == 1, "everything published beforehand is one group"
    assert consumer.totals == {Outcome.PLACED: 5, Outcome.REPLAYED: 1, Outcome.REFUSED: 6}
    assert placed_count(db, [f"good-{i}" for i in range(5)]) == 5
    assert count(db, Order) == 5
    assert queue_depth(intake_queue) == 0, "every message acknowledged"
    with db.read() as session:
        assert session.get(Product, "WIDGET").stock == 10_000 - 5  # type: ignore[union-attr]
        assert session.get(Product, "RARE").stock == 2  # type: ignore[union-attr]

    settings = Settings(_env_file=None, database_url=db.url, admin_token="t")
    server = BackgroundServer(create_app(settings, db)).start()
    try:
        api = httpx.Client(base_url=f"{server.url}/api/v1", headers={"Authorization": "Bearer t"})
        listed = api.get("/dead-letters", params={"step": "intake"}).json()
        details = [api.get(f"/dead-letters/{d['id']}").json() for d in listed["data"]]
        api.close()
    finally:
        server.stop()
    assert listed["total"] == 6
    reasons = "\n".join(g["cause"] for g in listed["groups"])
    for expected in (
        "intake · permanent · 409 idempotency_key_reused",
        "intake · poison · 422 unreadable: the body is not JSON",
        "intake · permanent · 422 invalid_request: idempotency_key: Field required",
        "intake · permanent · 422 invalid_request: unknown SKU: NOPE",
        "intake · permanent · 409 insufficient_stock",
        "intake · poison · 422 unreadable: the body is not UTF-8",
    ):
        assert expected in reasons, f"{expected!r} not among {reasons}"
    raws = {d["payload"]["raw"]: d for d in details}
    assert (
        raws['{"idempotency_key": "broken", "customer_id": ']["payload"]["raw_encoding"] == "utf-8"
    )
    assert any(d["payload"]["raw_encoding"] == "base64" for d in details)
    reused = next(d for d in details if d["payload"]["code"] == "idempotency_key_reused")
    assert reused["payload"]["idempotency_key"] == "good-0"
    assert json.loads(reused["payload"]["raw"])["lines"][0]["quantity"] == 2
    assert all(len(d["attempt_log"]) == 1 for d in details), "one attempt record each"


def test_a_redelivered_group_creates_nothing_twice(db: Database, customer: int) -> None:
    """Committed but not acked (killed in between): the redelivery places and records nothing."""
    commit = GroupCommit(db, "q", actor="intake:q", worker="test")
    group = [
        Inbound(json.dumps(message("k-1", customer, ("WIDGET", 1))).encode()),
        Inbound(json.dumps(message("k-2", customer, ("NOPE", 1))).encode()),
        Inbound(b"not json"),
    ]
    assert commit(group) == {Outcome.PLACED: 1, Outcome.REFUSED: 2}
    assert commit(group) == {Outcome.REPLAYED: 1, Outcome.KNOWN: 2}
    assert count(db, Order) == 1
    assert intake_letters(db) == 2
    assert count(db, TaskAttempt) == 2


def test_a_database_failure_acks_nothing_and_the_group_is_retried(
    db: Database, customer: int, intake_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first commits fail (database down, schema unknown): no ack, no order, no dead letter;
    the retry places each once."""
    real_place = placement.place_orders
    failures = [
        OperationalError("INSERT", {}, Exception("server closed the connection")),
        ProgrammingError("SELECT", {}, Exception('column "x" does not exist')),  # mid-deploy
    ]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return real_place(*args, **kwargs)

    monkeypatch.setattr("orderflow.intake.group.place_orders", flaky)
    publish_orders(
        BROKER, intake_queue, [message(f"k-{i}", customer, ("WIDGET", 1)) for i in range(20)]
    )
    with consuming(db, intake_queue) as consumer:
        wait_for(lambda: consumer.totals[Outcome.PLACED] == 20)
    assert not failures, "the failures happened"
    assert count(db, Order) == 20
    assert intake_letters(db) == 0
    assert queue_depth(intake_queue) == 0


def test_text_the_database_cannot_store_is_kept_and_blocks_nothing(
    db: Database, customer: int
) -> None:
    """NUL in the key, in a field name, in the body: refused and kept; the good one placed."""
    commit = GroupCommit(db, "q", actor="intake:q", worker="test")
    good = message("fine", customer, ("WIDGET", 1))
    bad_key = json.dumps(message("nul\x00key", customer, ("WIDGET", 1))).encode()
    bad_field = json.dumps({**message("k", customer, ("WIDGET", 1)), "\x00": 1}).encode()
    group = [
        Inbound(bad_key),
        Inbound(bad_field),
        Inbound(b"\x00 junk"),
        Inbound(json.dumps(good).encode()),
    ]
    assert commit(group) == {Outcome.REFUSED: 3, Outcome.PLACED: 1}
    with db.read() as session:
        letters = session.scalars(select(Task).where(Task.kind == "intake")).all()
        assert {t.payload["raw_encoding"] for t in letters} == {"utf-8"}
        assert all("\x00" not in (t.last_error or "") for t in letters)
    assert count(db, Order) == 1


def test_a_refusal_the_database_will_not_store_is_kept_in_base64(
    db: Database, customer: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storing a dead letter as text fails: it is stored plain (base64, ASCII), group unharmed."""
    real_record = refusals.record

    def picky(*args: Any, plain: bool = False, **kwargs: Any) -> bool:
        if not plain:
            raise ValueError("the database refuses this text")
        return real_record(*args, plain=plain, **kwargs)

    monkeypatch.setattr(refusals, "record", picky)
    commit = GroupCommit(db, "q", actor="intake:q", worker="test")
    good = json.dumps(message("fine", customer, ("WIDGET", 1))).encode()
    assert commit([Inbound(b"caf\xc3\xa9"), Inbound(good)]) == {
        Outcome.REFUSED: 1,
        Outcome.PLACED: 1,
    }
    with db.read() as session:
        letter = session.scalars(select(Task).where(Task.kind == "intake")).one()
        assert letter.payload["raw_encoding"] == "base64"
        assert raw_body(letter.payload) == b"caf\xc3\xa9"
    assert count(db, Order) == 1


def test_a_dropped_broker_connection_is_reopened_and_nothing_doubles(
    db: Database, customer: int, intake_queue: str
) -> None:
    """RabbitMQ closes the consumer's connection mid-stream: it reconnects and goes on; 600
    orders, each once (messages unacked at the close come again as harmless replays)."""
    keys = [f"c-{i}" for i in range(600)]
    bodies = [message(k, customer, ("WIDGET", 1)) for k in keys]
    publish_orders(BROKER, intake_queue, bodies[:300])
    name = f"intake-test-{uuid.uuid4().hex[:8]}"
    with consuming(db, intake_queue, prefetch=20, group_size=10, name=name) as consumer:
        wait_for(lambda: placed_count(db, keys) >= 30)
        close_connection(name)
        wait_for(lambda: consumer.connections >= 2, timeout=60)
        publish_orders(BROKER, intake_queue, bodies[300:])  # after the reconnection
        wait_for(lambda: placed_count(db, keys) == 600, timeout=120)
    assert count(db, Order) == 600
    assert queue_depth(intake_queue) == 0


def test_two_consumers_sharing_duplicated_messages_place_each_order_once(
    db: Database, customer: int, intake_queue: str
) -> None:
    """Every message published twice, two consumers on the queue: one order (and one stock
    reservation) per key."""
    keys = [f"d-{i}" for i in range(150)]
    bodies = [
        message(k, customer, ("WIDGET", 1), *([("RARE", 1)] if i < 2 else []))
        for i, k in enumerate(keys)
    ]
    publish_orders(BROKER, intake_queue, [*bodies, *reversed(bodies)])
    with (
        consuming(db, intake_queue, prefetch=20, group_size=10) as one,
        consuming(db, intake_queue, prefetch=20, group_size=10) as two,
    ):
        wait_for(lambda: one.totals.total() + two.totals.total() == 300, timeout=120)
    outcomes = one.totals + two.totals
    assert outcomes == {Outcome.PLACED: 150, Outcome.REPLAYED: 150}
    assert count(db, Order) == 150
    assert one.groups and two.groups, "both consumers took part"
    with db.read() as session:
        assert session.get(Product, "WIDGET").stock == 10_000 - 150  # type: ignore[union-attr]
        assert session.get(Product, "RARE").stock == 0  # type: ignore[union-attr]
    assert queue_depth(intake_queue) == 0


def test_groups_are_as_large_as_one_short_transaction_allows() -> None:
    """Unknown cost: 50; 25 ms a message with a 0.5 s budget: 20; never above prefetch or size."""
    consumer = IntakeConsumer(Database("sqlite://"), BROKER, "q", prefetch=1000, group_size=500)
    assert consumer.group_limit() == 50
    consumer.learn_cost(2.5, 100)
    assert consumer.group_limit() == 20
    for _ in range(30):
        consumer.learn_cost(0.0001, 100)  # placement got fast: groups grow to the full size
    assert consumer.group_limit() == 500
    consumer.throttle(8)
    assert consumer.group_limit() == 8


def test_throttling_a_running_consumer_narrows_its_window_and_groups(
    db: Database, customer: int, intake_queue: str
) -> None:
    """Throttled to 10 while running: 60 messages then arrive 10 unacked at most, in groups of
    at most 10."""
    with consuming(db, intake_queue, prefetch=1000, group_size=500) as consumer:
        wait_for(lambda: consumer.connections == 1)
        applied = consumer.throttle(10)
        assert applied is not None
        applied.result(timeout=10)
        keys = [f"t-{i}" for i in range(60)]
        publish_orders(BROKER, intake_queue, [message(k, customer, ("WIDGET", 1)) for k in keys])
        wait_for(lambda: consumer.totals[Outcome.PLACED] == 60, timeout=120)
    assert consumer.peak_unacked <= 10
    assert consumer.groups >= 6
    assert count(db, Order) == 60


def _intake_worker(db: Database) -> Worker:
    return Worker(
        db, {"intake": IntakeStep()}, retry=RetryPolicy(0.05, 0.2), lease_seconds=5, name="w"
    )


def test_redrive_after_the_fix_places_the_order_once(db: Database, customer: int) -> None:
    """Unknown SKU → dead letter; redriven unfixed → dead again; product added, redriven → one
    order, the dead letter names it; a second redrive is refused (it is no dead letter)."""
    commit = GroupCommit(db, "q", actor="intake:q", worker="test")
    body = json.dumps(message("late-sku", customer, ("LATE", 2))).encode()
    assert commit([Inbound(body)]) == {Outcome.REFUSED: 1}
    with db.read() as session:
        task_id = session.scalars(select(Task.id).where(Task.kind == "intake")).one()
    worker = _intake_worker(db)

    with db.transaction() as session:
        dead_letters.redrive(session, task_id, actor="test")
    assert worker.run_once() == 1
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None and task.status == "dead" and task.attempts == 2
        assert "unknown SKU: LATE" in (task.last_error or "")

    with db.transaction() as session:
        create_product(
            session, sku="LATE", name="Late", price=500, currency="GBP", weight_grams=10, stock=5
        )
        dead_letters.redrive(session, task_id, actor="test")
    assert worker.run_once() == 1
    with db.read() as session:
        task = session.get(Task, task_id)
        order = session.scalars(select(Order).where(Order.idempotency_key == "late-sku")).one()
        assert task is not None and task.status == "done" and task.order_id == order.id
        assert session.get(Product, "LATE").stock == 3  # type: ignore[union-attr]
    assert count(db, TaskAttempt, TaskAttempt.task_id == task_id) == 3
    with db.transaction() as session, pytest.raises(Exception, match="not a dead letter"):
        dead_letters.redrive(session, task_id, actor="test")
    # The message delivered again (a crash before its ack) changes nothing either.
    assert commit([Inbound(body)]) == {Outcome.REPLAYED: 1}
    assert count(db, Order) == 1


def test_a_refused_message_sent_again_after_the_fix_is_placed_and_closes_its_dead_letter(
    db: Database, customer: int
) -> None:
    """Refused (unknown SKU), refused again (no second dead letter), product added, sent again:
    one order; the dead letter is done, names the order, and its attempts tell the story."""
    commit = GroupCommit(db, "q", actor="intake:q", worker="test")
    body = json.dumps(message("resent", customer, ("LATE", 1))).encode()
    assert commit([Inbound(body)]) == {Outcome.REFUSED: 1}
    assert commit([Inbound(body)]) == {Outcome.KNOWN: 1}
    with db.transaction() as session:
        create_product(
            session, sku="LATE", name="Late", price=500, currency="GBP", weight_grams=10, stock=5
        )
    assert commit([Inbound(body), Inbound(body)]) == {Outcome.PLACED: 1, Outcome.REPLAYED: 1}
    with db.read() as session:
        task = session.scalars(select(Task).where(Task.kind == "intake")).one()
        order = session.scalars(select(Order)).one()
        assert (task.status, task.order_id, task.attempts) == ("done", order.id, 2)
        outcomes = session.scalars(
            select(TaskAttempt.outcome)
            .where(TaskAttempt.task_id == task.id)
            .order_by(TaskAttempt.id)
        ).all()
        assert outcomes == ["permanent", "ok"]


def test_discarding_an_intake_dead_letter_keeps_it_and_touches_no_order(
    db: Database, customer: int
) -> None:
    """Discard of a refusal without an order: status discarded, evidence kept, no order made."""
    commit = GroupCommit(db, "q", actor="intake:q", worker="test")
    assert commit([Inbound(b"garbage")]) == {Outcome.REFUSED: 1}
    with db.transaction() as session:
        task_id = session.scalars(select(Task.id).where(Task.kind == "intake")).one()
        dead_letters.discard(session, task_id, actor="test", reason="sender fixed it")
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None and task.status == "discarded"
        assert task.payload["raw"] == "garbage"
    assert count(db, Order) == 0


def test_intake_without_a_broker_url_refuses_with_one_clear_line(tmp_path: Path) -> None:
    """`orderflow intake` with neither ORDERFLOW_INTAKE_URL nor ORDERFLOW_BROKER_URL: exit 1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
    env["ORDERFLOW_DATABASE_URL"] = f"sqlite:///{tmp_path}/orderflow.db"
    done = subprocess.run(
        [sys.executable, "-m", "orderflow", "intake"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert done.returncode == 1
    assert "ORDERFLOW_INTAKE_URL (or ORDERFLOW_BROKER_URL) must be set" in done.stderr
    assert "Traceback" not in done.stderr
