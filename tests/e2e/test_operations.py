"""The operator's paths with real processes: a dead letter alerted on Slack, fixed, redriven;
a lost parcel e-mailed to logistics; an outage alerted once and resolved once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.processes import FAST_KNOBS, E2EStack, ProcessGroup, e2e_stack, wait_until
from tests.support.slack import SlackReceiver

pytestmark = pytest.mark.e2e

LOGISTICS = "logistics@shop.example"
ADDRESS = {"line1": "12 St James's Sq", "city": "London", "postcode": "SW1Y 4JH", "country": "GB"}


@pytest.fixture
def slack() -> Iterator[SlackReceiver]:
    with SlackReceiver() as receiver:
        yield receiver


@pytest.fixture
def stack(processes: ProcessGroup, own_pg_url: str, slack: SlackReceiver) -> Iterator[E2EStack]:
    knobs = {
        **FAST_KNOBS,
        "ORDERFLOW_SLACK_WEBHOOK_URL": slack.url,
        "ORDERFLOW_LOGISTICS_EMAIL": LOGISTICS,
        "ORDERFLOW_ALERT_CHECK_SECONDS": "0.3",
        "ORDERFLOW_ALERT_DEPENDENCY_DOWN_SECONDS": "1",
        "ORDERFLOW_ALERT_DELIVERY_DELAY_SECONDS": "3600",
        "ORDERFLOW_BREAKER_FAILURE_THRESHOLD": "2",
        "ORDERFLOW_BREAKER_PROBE_SECONDS": "0.5",
    }
    with e2e_stack(processes, own_pg_url, knobs) as s:
        s.start_outside_and_serve(progress_seconds=0.1)
        s.start_worker("w1")
        s.start_worker("w2")
        yield s


def _customer(stack: E2EStack, **address: str) -> int:
    body = {
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "address": {**ADDRESS, **address},
        "payment_method": "pm_ok_visa",
    }
    response = stack.api("POST", "/customers", json=body)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _place(stack: E2EStack, customer: int, key: str) -> dict[str, Any]:
    return stack.place(customer, [("WIDGET", 1)], key=key)


def test_dead_letter_alerted_fixed_redriven_ships_once(
    stack: E2EStack, slack: SlackReceiver
) -> None:
    """Bob's Post 422 → dead letter → Slack alert → address fixed → redriven → shipped once."""
    stack.create_product("WIDGET", stock=50)
    order = _place(stack, _customer(stack, country="XX"), "bad-address")
    wait_until(
        lambda: stack.dead_letters()["total"] == 1, timeout=60, what="the booking is dead-lettered"
    )
    wait_until(lambda: bool(slack.received("dead letter")), timeout=30, what="Slack hears of it")
    [alert] = slack.received("dead letter")
    assert "book · permanent" in alert and "422" in alert

    [letter] = stack.dead_letters()["data"]
    patched = stack.api("PATCH", f"/orders/{order['id']}", json={"address": ADDRESS})
    assert patched.status_code == 200, patched.text
    assert stack.api("POST", f"/dead-letters/{letter['id']}/redrive").status_code == 200
    wait_until(
        lambda: stack.order(order["id"])["status"] in ("shipped", "delivered"),
        timeout=60,
        what="the order ships",
    )
    assert stack.carrier_stats()["bookings_by_reference"] == {order["reference"]: 1}
    wait_until(
        lambda: bool(slack.received("No dead letters left")), timeout=30, what="resolved on Slack"
    )
    assert len(slack.messages) == 2


def test_lost_parcel_is_one_logistics_email(stack: E2EStack) -> None:
    """A parcel the carrier loses: exactly one e-mail to logistics naming the order."""
    stack.create_product("WIDGET", stock=50)
    order = _place(stack, _customer(stack, postcode="LOST"), "lost")
    wait_until(
        lambda: stack.order(order["id"])["status"] == "delivery_failed", timeout=60, what="lost"
    )

    def to_logistics() -> list[str]:
        return [m["subject"] for m in stack.mails() if LOGISTICS in m["rcpt_to"]]

    wait_until(lambda: bool(to_logistics()), timeout=30, what="logistics is told")
    time.sleep(1.0)
    assert to_logistics() == [f"[orderflow] Parcel for {order['reference']} was lost"]


def test_outage_is_one_alert_and_one_resolved_message(
    stack: E2EStack, slack: SlackReceiver
) -> None:
    """Bob's Post down: one Slack alert however long, one 'answering again', orders ship."""
    stack.create_product("WIDGET", stock=50)
    stack.carrier_switches(outage="503")
    customer = _customer(stack)
    orders = [_place(stack, customer, f"outage-{i}") for i in range(3)]
    wait_until(
        lambda: bool(slack.received("Bob's Post is down")), timeout=60, what="the outage alert"
    )
    time.sleep(3.0)  # the outage goes on; no more messages
    stack.carrier_switches(outage=None)

    def all_shipped() -> bool:
        return all(stack.order(o["id"])["status"] in ("shipped", "delivered") for o in orders)

    wait_until(all_shipped, timeout=60, what="orders ship after the outage")
    wait_until(
        lambda: bool(slack.received("answering again")), timeout=30, what="resolved on Slack"
    )
    assert len(slack.received("Bob's Post")) == 2
