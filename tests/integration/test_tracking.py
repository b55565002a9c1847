"""Webhooks that lie (forged, stale, duplicated, reordered, lost) and ambiguous gateway failures."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy
from sqlalchemy import select

from orderflow.shipping.bobs_post import Booking
from orderflow.shipping.models import CarrierEvent
from orderflow.shipping.signature import HEADER, sign
from orderflow.shipping.tracking import Observation
from orderflow.shipping.webhook_commit import WebhookCommit
from orderflow.tasks.queue import ClaimedTask
from tests.support.stack import Stack, start_stack


def _post_webhook(stack: Stack, body: bytes, header: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers[HEADER] = header
    return httpx.post(f"{stack.server.url}/webhooks/bobs-post", content=body, headers=headers)


def _event(shipment_id: str, status: str, event_id: str, reference: str = "ORD-000001") -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "type": "shipment.status_changed",
            "shipment_id": shipment_id,
            "reference": reference,
            "status": status,
            "occurred_at": "2026-11-22T15:04:05Z",
        }
    ).encode()


def test_forged_stale_and_unsigned_webhooks_are_rejected(stack: Stack) -> None:
    """401 for no signature, a wrong secret, a tampered body and a replayed old timestamp."""
    secret = stack.outside.webhook_secret
    body = _event("bp_shp_x", "collected", "evt-1")
    now = int(time.time())
    assert _post_webhook(stack, body, None).status_code == 401
    assert _post_webhook(stack, body, sign("wrong", body, now)).status_code == 401
    assert _post_webhook(stack, body + b" ", sign(secret, body, now)).status_code == 401
    assert _post_webhook(stack, body, sign(secret, body, now - 301)).status_code == 401
    assert _post_webhook(stack, body, "t=abc,v1=zz").status_code == 401
    rejected = _post_webhook(stack, body, sign(secret, body, now - 301)).json()
    assert rejected["error"]["code"] == "bad_signature"
    garbage = b"{not json"
    assert _post_webhook(stack, garbage, sign(secret, garbage, now)).status_code == 422
    with stack.db.read() as session:
        assert session.scalars(select(CarrierEvent)).all() == []


def test_duplicate_and_reordered_webhooks_never_move_an_order_backwards(stack: Stack) -> None:
    """Same event twice is stored once; 'in_transit' after 'complete' is ignored as stale."""
    stack.outside.carrier_switches(progress_seconds=3600, webhook_url=None)
    customer = stack.customer()
    stack.product("WIDGET", stock=5)
    order = stack.place(customer, [("WIDGET", 1)])
    view = stack.work_until_status(order["id"], "scheduled")
    shipment_id = view["shipment"]["shipment_id"]
    secret, now = stack.outside.webhook_secret, int(time.time())

    def deliver(status: str, event_id: str) -> str:
        body = _event(shipment_id, status, event_id, order["reference"])
        response = _post_webhook(stack, body, sign(secret, body, now))
        assert response.status_code == 200, response.text
        return str(response.json()["status"])

    assert deliver("complete", "e-3") == "applied"  # arrives first
    assert deliver("complete", "e-3") == "duplicate"
    assert deliver("collected", "e-1") == "stale"
    assert deliver("in_transit", "e-2") == "stale"
    stack.work_until_status(order["id"], "delivered")
    history = stack.order(order["id"])["history"]
    statuses = [h["to"] for h in history if h["to"]]
    assert statuses == ["paid", "scheduled", "shipped", "delivered"]
    ignored = [
        h["details"]["carrier_status"]
        for h in history
        if h["action"] == "shipment.observation_ignored"
    ]
    assert ignored == ["collected", "in_transit"]  # rejected webhooks are in the history too
    assert len(stack.outside.mail.messages()) == 1


def test_unknown_carrier_status_is_recorded_not_guessed(stack: Stack) -> None:
    """A status word we do not know is kept in the history and changes nothing."""
    stack.outside.carrier_switches(progress_seconds=3600, webhook_url=None)
    customer = stack.customer()
    stack.product("WIDGET", stock=5)
    order = stack.place(customer, [("WIDGET", 1)])
    view = stack.work_until_status(order["id"], "scheduled")
    body = _event(view["shipment"]["shipment_id"], "teleported", "e-x", order["reference"])
    response = _post_webhook(
        stack, body, sign(stack.outside.webhook_secret, body, int(time.time()))
    )
    assert response.json()["status"] == "unknown_status"
    after = stack.order(order["id"])
    assert after["status"] == "scheduled"
    assert after["history"][-1]["action"] == "shipment.unknown_status"
    assert after["history"][-1]["details"]["carrier_status"] == "teleported"


def test_webhook_before_the_booking_is_recorded_is_applied_later(stack: Stack) -> None:
    """An event for a shipment we have not recorded yet is kept and replayed on booking."""
    stack.outside.carrier_switches(progress_seconds=3600, webhook_url=None)
    customer = stack.customer()
    stack.product("WIDGET", stock=5)
    order = stack.place(customer, [("WIDGET", 1)])
    stack.work_until_status(order["id"], "paid")
    # Book at the carrier behind our back with the key the book step will use.
    booking = stack.adapters.carrier.book(
        idempotency_key=f"{order['reference']}:book",
        body=_booking_body(stack, order["id"]),
    )
    body = _event(booking.shipment_id, "collected", "early-1", order["reference"])
    response = _post_webhook(
        stack, body, sign(stack.outside.webhook_secret, body, int(time.time()))
    )
    assert response.json()["status"] == "unmatched"
    view = stack.work_until_status(order["id"], "shipped")
    assert view["shipment"]["shipment_id"] == booking.shipment_id
    assert stack.outside.carrier_stats()["bookings_by_reference"] == {order["reference"]: 1}


def _booking_body(stack: Stack, order_id: int) -> dict[str, object]:
    from orderflow.orders.models import Order
    from orderflow.shipping.steps import booking_request

    with stack.db.read() as session:
        order = session.get(Order, order_id)
        assert order is not None
        return booking_request(order)


@pytest.fixture
def polling_stack(database_url: str) -> Iterator[Stack]:
    with start_stack(database_url, tracking_poll_seconds=0.3) as s:
        yield s


def test_lost_webhooks_are_covered_by_polling(polling_stack: Stack) -> None:
    """Every webhook lost: orders still reach delivered, learnt by polling the carrier."""
    stack = polling_stack
    stack.outside.carrier_switches(webhook_loss_rate=1.0, progress_seconds=0.05)
    customer = stack.customer()
    stack.product("WIDGET", stock=5)
    order = stack.place(customer, [("WIDGET", 1)])
    done = stack.work_until_status(order["id"], "delivered")
    assert stack.outside.carrier_stats()["webhooks_sent"] == 0
    assert len(stack.outside.mail.messages()) == 1
    with stack.db.read() as session:
        sources = set(session.scalars(select(CarrierEvent.source)))
    assert sources == {"poll"}
    assert done["work"] == []  # polling stopped once the parcel was delivered


def test_duplicated_and_shuffled_webhooks_give_one_email_per_order(stack: Stack) -> None:
    """Every webhook sent twice and shuffled: orders complete, one e-mail each, forward only."""
    stack.outside.carrier_switches(
        webhook_duplicate_rate=1.0, webhook_shuffle_seconds=0.2, progress_seconds=0.05
    )
    customer = stack.customer()
    stack.product("WIDGET", stock=50)
    orders = [stack.place(customer, [("WIDGET", 1)]) for _ in range(5)]
    for order in orders:
        stack.work_until_status(order["id"], "delivered")
    subjects = [m.subject for m in stack.outside.mail.messages()]
    assert sorted(subjects) == sorted(f"Your order {o['reference']} has shipped" for o in orders)
    for order in orders:
        statuses = [h["to"] for h in stack.order(order["id"])["history"] if h["to"]]
        assert statuses == ["paid", "scheduled", "shipped", "delivered"]


def test_ambiguous_failures_never_charge_or_book_twice(stack: Stack) -> None:
    """Both gateways do the work then answer 504: retries with the same key settle it once."""
    stack.outside.paydesk_switches(ambiguous_rate=1.0)
    stack.outside.carrier_switches(ambiguous_rate=1.0, progress_seconds=0.05)
    customer = stack.customer()
    stack.product("WIDGET", stock=50)
    orders = [stack.place(customer, [("WIDGET", 1)]) for _ in range(4)]
    stack.work_until(lambda: len(stack.outside.paydesk_stats()["charges_by_order_reference"]) == 4)
    for _ in range(3):
        stack.worker.run_once()
        time.sleep(0.1)
    stack.outside.paydesk_switches(ambiguous_rate=0.0)
    stack.work_until(lambda: len(stack.outside.carrier_stats()["bookings_by_reference"]) == 4)
    for _ in range(3):
        stack.worker.run_once()
        time.sleep(0.1)
    stack.outside.carrier_switches(ambiguous_rate=0.0)
    for order in orders:
        stack.work_until_status(order["id"], "delivered")
    refs = {o["reference"]: 1 for o in orders}
    assert stack.outside.paydesk_stats()["charges_by_order_reference"] == refs
    assert stack.outside.carrier_stats()["bookings_by_reference"] == refs


def test_webhook_racing_its_booking_commit_is_applied_when_the_booking_commits(
    stack: Stack,
) -> None:
    """A 'collected' webhook arriving while its booking is being committed ships the order."""
    stack.outside.carrier_switches(progress_seconds=3600, webhook_url=None)
    customer = stack.customer()
    stack.product("WIDGET", stock=5)
    order = stack.place(customer, [("WIDGET", 1)])
    stack.work_until_status(order["id"], "paid")
    book = stack.worker.steps["book"]
    booking = Booking(shipment_id="bp_shp_race", tracking_number="BP000RACE", status="booked")
    task = ClaimedTask(
        id=0, key=f"{order['reference']}:book", kind="book", order_id=order["id"],
        payload={}, attempts=1, lease_token="race",
    )  # fmt: skip
    in_booking, release = threading.Event(), threading.Event()

    def commit_booking() -> None:
        with stack.db.transaction() as session:
            book.complete(session, task, booking)  # records the booking, replays unmatched
            in_booking.set()
            release.wait(10)  # hold the commit while the webhook arrives

    booker = threading.Thread(target=commit_booking)
    booker.start()
    assert in_booking.wait(10)
    secret = stack.outside.webhook_secret
    body = _event("bp_shp_race", "collected", "evt-race", order["reference"])
    answers: list[httpx.Response] = []
    poster = threading.Thread(
        target=lambda: answers.append(
            _post_webhook(stack, body, sign(secret, body, int(time.time())))
        )
    )
    poster.start()
    poster.join(1.0)  # the webhook must wait for the booking's commit, not overtake it
    release.set()
    booker.join(10)
    poster.join(10)
    assert answers and answers[0].status_code == 200, answers
    assert answers[0].json()["status"] == "applied"
    with stack.db.read() as session:
        outcomes = session.scalars(select(CarrierEvent.outcome)).all()
    assert outcomes == ["applied"]
    assert stack.order(order["id"])["status"] == "shipped"


def test_webhooks_arriving_together_are_applied_as_one_group_each_on_its_own(
    stack: Stack,
) -> None:
    """One group of webhooks: a few statements for all of them; each event is applied once (a
    duplicate inside the group too), an unknown shipment's is kept, a poisoned one fails alone."""
    stack.outside.carrier_switches(progress_seconds=3600, webhook_url=None)
    customer = stack.customer()
    stack.product("WIDGET", stock=10)
    orders = [stack.place(customer, [("WIDGET", 1)]) for _ in range(4)]
    shipped = [stack.work_until_status(o["id"], "scheduled")["shipment"] for o in orders]
    at = datetime(2026, 11, 22, 15, 4, 5, tzinfo=UTC)

    def seen(i: int, status: str, event_id: str, when: datetime = at) -> Observation:
        return Observation(
            carrier="bobs_post",
            event_id=event_id,
            carrier_shipment_id=shipped[i]["shipment_id"],
            reference=orders[i]["reference"],
            carrier_status=status,
            occurred_at=when,
            source="webhook",
        )

    statements: list[str] = []
    listen = sqlalchemy.event.listen
    listen(stack.db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    group = WebhookCommit(stack.db, poll_seconds=3600)
    outcomes = group.run_group(
        [seen(i, "collected", f"g-{i}") for i in range(4)]
        + [seen(i, "in_transit", f"g-t{i}") for i in range(4)]
    )
    assert outcomes == ["applied"] * 8
    assert len(statements) <= 14, "\n".join(s.split("\n")[0][:90] for s in statements)
    statements.clear()  # delivered before their "shipped" e-mail: one look at the e-mails
    assert group.run_group([seen(i, "complete", f"g-d{i}") for i in (0, 3)]) == ["applied"] * 2
    assert sum("FROM notifications" in s for s in statements) == 1, statements

    stray = replace(seen(0, "collected", "g-x"), carrier_shipment_id="bp_shp_nobody")
    poisoned = seen(1, "delivered", "g-bad", when=at.replace(tzinfo=None))  # naive: refused
    outcomes = group.run_group(
        [seen(2, "complete", "g-c2"), seen(2, "complete", "g-c2"), stray, poisoned]
    )
    assert outcomes[:3] == ["applied", "duplicate", "unmatched"]
    assert isinstance(outcomes[3], Exception)  # refused on its own, not with the group
    assert "naive datetime" in str(outcomes[3])
    group.close()
    with stack.db.read() as session:
        stored = session.scalars(select(CarrierEvent.event_id)).all()
    assert sorted(stored) == sorted(
        [f"g-{i}" for i in range(4)]
        + [f"g-t{i}" for i in range(4)]
        + ["g-d0", "g-d3", "g-c2", "g-x"]
    )
    stack.work_until_status(orders[2]["id"], "delivered")
    assert stack.order(orders[1]["id"])["status"] == "shipped"
