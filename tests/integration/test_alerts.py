"""Alerts reach the right people: Slack for developers, e-mail for logistics; no floods."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from orderflow.alerts.models import Incident
from orderflow.alerts.rules import Thresholds, evaluate
from orderflow.clock import now
from orderflow.db import Database
from orderflow.tasks.models import Task, TaskStatus
from orderflow.wiring import alert_thresholds
from tests.support.slack import SlackReceiver
from tests.support.stack import ADDRESS, Stack, start_stack

LOGISTICS = "logistics@shop.example"


@pytest.fixture
def slack() -> Iterator[SlackReceiver]:
    with SlackReceiver() as receiver:
        yield receiver


@pytest.fixture
def alert_stack(database_url: str, slack: SlackReceiver) -> Iterator[Stack]:
    with start_stack(
        database_url,
        slack_webhook_url=slack.url,
        logistics_email=LOGISTICS,
        alert_check_seconds=0.2,
        alert_dependency_down_seconds=0.5,
        alert_delivery_delay_seconds=1.0,
        alert_backlog_age_seconds=3600.0,
        alert_repeat_seconds=3600.0,
        breaker_failure_threshold=2,
        breaker_probe_seconds=0.3,
        http_timeout_seconds=0.5,
        lease_seconds=2.0,
    ) as s:
        yield s


def _run_for(stack: Stack, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if stack.worker.run_once() == 0:
            time.sleep(0.02)


def _logistics_mail(stack: Stack) -> list[str]:
    return [m.subject for m in stack.outside.mail.messages() if LOGISTICS in m.rcpt_to]


def test_dead_letters_are_told_once_grouped_and_resolved(
    alert_stack: Stack, slack: SlackReceiver
) -> None:
    """Two dead bookings: one Slack message naming the cause, then one 'resolved' once fixed."""
    stack = alert_stack
    stack.product("WIDGET", stock=10)
    orders = [stack.place(stack.customer(country="XX"), [("WIDGET", 1)]) for _ in range(2)]
    stack.work_until(lambda: stack.api.get("/dead-letters").json()["total"] == 2)
    stack.work_until(lambda: len(slack.received("dead letter")) >= 1)
    _run_for(stack, 1.0)
    [told] = slack.received("dead letter")
    assert "book · permanent" in told and "422" in told

    for order in orders:
        assert (
            stack.api.patch(f"/orders/{order['id']}", json={"address": ADDRESS}).status_code == 200
        )
    assert (
        stack.api.post(
            "/dead-letters/redrive", json={"step": "book", "pace_seconds": 0}
        ).status_code
        == 202
    )
    stack.work_until(lambda: bool(slack.received("No dead letters left")))
    _run_for(stack, 0.5)
    assert len(slack.messages) == 2


def test_an_outage_is_one_alert_and_one_resolved_message(
    alert_stack: Stack, slack: SlackReceiver
) -> None:
    """Bob's Post down for seconds: one Slack alert, one logistics e-mail naming the orders,
    and one 'resolved' of each when it is back; nothing more however long it lasts."""
    stack = alert_stack
    stack.outside.carrier_switches(outage="503", progress_seconds=0.05)
    stack.product("WIDGET", stock=10)
    orders = [stack.place(stack.customer(), [("WIDGET", 1)]) for _ in range(3)]
    stack.work_until(lambda: bool(slack.received("Bob's Post is down")))
    stack.work_until(lambda: any("delayed" in s for s in _logistics_mail(stack)))
    _run_for(stack, 2.0)  # the outage goes on: no more messages
    assert len(slack.received("Bob's Post is down")) == 1
    [delayed] = [s for s in _logistics_mail(stack) if "delayed" in s]
    assert all(o["reference"] in delayed for o in orders)

    stack.outside.carrier_switches(outage=None)
    for order in orders:
        stack.work_until_status(order["id"], "delivered")
    stack.work_until(lambda: bool(slack.received("answering again")))
    stack.work_until(lambda: any("Resolved" in s for s in _logistics_mail(stack)))
    _run_for(stack, 0.5)
    assert len(slack.received("Bob's Post")) == 2
    assert len([s for s in _logistics_mail(stack) if "Bob's Post" in s]) == 2


def test_a_lost_parcel_is_one_logistics_email(alert_stack: Stack) -> None:
    """Bob's Post loses a parcel: logistics gets one e-mail whose subject names the order."""
    stack = alert_stack
    stack.product("WIDGET", stock=10)
    order = stack.place(stack.customer(postcode="LOST"), [("WIDGET", 1)])
    stack.work_until_status(order["id"], "delivery_failed")
    stack.work_until(lambda: bool(_logistics_mail(stack)))
    _run_for(stack, 0.5)
    assert _logistics_mail(stack) == [f"[orderflow] Parcel for {order['reference']} was lost"]


def test_slack_being_down_delays_an_alert_but_neither_loses_it_nor_blocks_orders(
    alert_stack: Stack, slack: SlackReceiver
) -> None:
    """Slack answers 503: orders still ship; the alert arrives once Slack is back."""
    stack = alert_stack
    slack.down = True
    stack.product("WIDGET", stock=10)
    stack.place(stack.customer(country="XX"), [("WIDGET", 1)])
    good = stack.place(stack.customer(), [("WIDGET", 1)])
    stack.work_until_status(good["id"], "delivered")
    _run_for(stack, 1.0)
    assert slack.messages == []
    slack.down = False
    stack.work_until(lambda: bool(slack.received("dead letter")), timeout=30)
    assert len(slack.received("dead letter")) == 1


def test_without_slack_or_logistics_addresses_alerts_are_logged_not_lost(stack: Stack) -> None:
    """Nothing configured: the alert messages complete (logged), they never become dead letters."""
    stack.product("WIDGET", stock=10)
    order = stack.place(stack.customer(postcode="LOST"), [("WIDGET", 1)])
    stack.place(stack.customer(country="XX"), [("WIDGET", 1)])
    stack.work_until_status(order["id"], "delivery_failed")
    with stack.db.transaction() as session:  # judge the conditions now rather than in 30 s
        evaluate(session, alert_thresholds(stack.settings))

    def delivered() -> bool:
        with stack.db.read() as session:
            kinds = session.execute(
                select(Task.kind, Task.status).where(Task.kind.in_(["alert_slack", "alert_email"]))
            ).all()
        return bool(kinds) and all(status == "done" for _, status in kinds)

    stack.work_until(delivered)
    assert stack.api.get("/dead-letters", params={"step": "alert_slack"}).json()["total"] == 0


def test_outside_text_in_a_slack_alert_is_escaped(alert_stack: Stack, slack: SlackReceiver) -> None:
    """A customer's text quoted in a dead-letter alert cannot ping the channel or hide a link."""
    stack = alert_stack
    stack.product("WIDGET", stock=10)
    hostile = "<!channel> <https://evil.example|reset your password> & co"
    stack.place(stack.customer(payment_method=hostile), [("WIDGET", 1)])
    stack.work_until(lambda: bool(slack.received("dead letter")))
    [told] = slack.received("dead letter")
    assert "&lt;!channel&gt; &lt;https://evil.example|reset your password&gt; &amp; co" in told
    assert "<!channel>" not in told and "<https://" not in told
    assert "<" not in told and ">" not in told


def _dead_letters(db: Database, how_many: int, start: int) -> None:
    at = now()
    with db.transaction() as session:
        session.add_all(
            Task(
                key=f"test-dead:{start + i}",
                kind="book",
                status=TaskStatus.DEAD,
                error_class="permanent",
                last_error="Bob's Post POST /v1/shipments: HTTP 422: unknown country",
                last_failed_at=at,
            )
            for i in range(how_many)
        )


def _told(db: Database) -> list[str]:
    with db.read() as session:
        tasks = session.scalars(select(Task).where(Task.kind == "alert_slack").order_by(Task.id))
        return [f"{t.payload['event']}: {t.payload['title']}" for t in tasks]


def test_a_growing_pile_of_dead_letters_is_retold_when_it_doubles_not_more(db: Database) -> None:
    """11 dead letters are told; 200 an instant later are told at once (the count doubled),
    although the hour between reminders has not passed; 210 are not told again (no flood);
    the incident's count stays true all along."""
    limits = Thresholds(
        dependency_down=timedelta(minutes=5),
        backlog_age=timedelta(hours=1),
        delivery_delay=timedelta(hours=4),
        repeat_every=timedelta(hours=1),
    )
    _dead_letters(db, 11, 0)
    with db.transaction() as session:
        evaluate(session, limits)
    assert _told(db) == ["opened: 11 dead letter(s) need a person"]
    _dead_letters(db, 189, 11)
    for _ in range(2):
        with db.transaction() as session:
            evaluate(session, limits)
    assert _told(db)[1:] == ["update: 200 dead letter(s) need a person"]
    _dead_letters(db, 10, 200)
    with db.transaction() as session:
        evaluate(session, limits)
    assert len(_told(db)) == 2
    with db.read() as session:
        incident = session.scalar(select(Incident).where(Incident.open_key == "dead_letters"))
        assert incident is not None
        assert incident.details["count"] == 210 and incident.details["told_count"] == 200
        assert [m["event"] for m in incident.messages or []] == ["opened", "update"]
