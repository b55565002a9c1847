"""Dependency outages: the breaker stops the calls, tasks wait unspent, the backlog drains paced."""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import pairwise

import httpx
import pytest
from sqlalchemy import func, select

from orderflow.tasks.models import Task, TaskAttempt
from tests.support.stack import Stack, start_stack

OUTAGE_KNOBS = {
    "breaker_failure_threshold": 3,
    "breaker_probe_seconds": 0.5,
    "retry_base_seconds": 0.05,
    "retry_max_seconds": 0.2,
    "http_timeout_seconds": 0.4,
    "lease_seconds": 1.0,
}


@pytest.fixture
def outage_stack(database_url: str) -> Iterator[Stack]:
    with start_stack(database_url, **OUTAGE_KNOBS) as s:
        yield s


def _attempts(stack: Stack, kind: str) -> int:
    with stack.db.read() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(TaskAttempt).join(Task).where(Task.kind == kind)
            )
            or 0
        )


def _spent(stack: Stack, kind: str) -> int:
    """Attempts the tasks of this kind have used up (task.attempts, summed)."""
    with stack.db.read() as session:
        return int(session.scalar(select(func.sum(Task.attempts)).where(Task.kind == kind)) or 0)


def _dependency(stack: Stack, name: str) -> dict[str, object]:
    [dep] = [d for d in stack.api.get("/dependencies").json()["data"] if d["name"] == name]
    return dict(dep)


def _run_for(stack: Stack, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if stack.worker.run_once() == 0:
            time.sleep(0.02)


@pytest.mark.parametrize("mode", ["503", "hang"])
def test_a_carrier_outage_longer_than_every_cap_loses_nothing_and_spends_nothing(
    outage_stack: Stack, mode: str
) -> None:
    """Bob's Post down (503 or hanging) for 20 x the retry cap: only probes call it; all ship."""
    stack = outage_stack
    stack.outside.carrier_switches(outage=mode, hang_seconds=1.0, progress_seconds=0.05)
    customer = stack.customer()
    stack.product("WIDGET", stock=50)
    orders = [stack.place(customer, [("WIDGET", 1)]) for _ in range(6)]
    stack.work_until(lambda: _dependency(stack, "bobs_post")["state"] == "open")

    # Down for 4 s: 20 x retry_max, 4 x the lease. Only probes reach the carrier.
    before, spent = _attempts(stack, "book"), _spent(stack, "book")
    _run_for(stack, 4.0)
    probes = _attempts(stack, "book") - before
    assert 1 <= probes <= 4.0 / OUTAGE_KNOBS["breaker_probe_seconds"] + 1
    assert _spent(stack, "book") == spent  # probes are recorded, but waiting spends nothing
    dep = _dependency(stack, "bobs_post")
    assert dep["state"] == "open"
    assert dep["backlog"]["tasks"] == 6  # type: ignore[index]
    view = stack.order(orders[0]["id"])
    assert view["status"] == "paid"
    assert view["waiting"]["message"].startswith("waiting for Bob's Post since")
    assert "next probe" in view["waiting"]["message"]
    with stack.db.read() as session:
        assert (
            session.scalar(select(func.count()).select_from(Task).where(Task.status == "dead")) == 0
        )

    stack.outside.carrier_switches(outage=None)
    for order in orders:
        stack.work_until_status(order["id"], "delivered")
    assert _dependency(stack, "bobs_post")["state"] == "closed"
    refs = {o["reference"]: 1 for o in orders}
    assert stack.outside.carrier_stats()["bookings_by_reference"] == refs
    assert len(stack.outside.mail.messages()) == len(orders)


def test_a_paydesk_outage_waits_and_charges_each_order_once(outage_stack: Stack) -> None:
    """Paydesk down: orders wait in placed, nobody is charged twice once it is back."""
    stack = outage_stack
    stack.outside.paydesk_switches(outage="503")
    customer = stack.customer()
    stack.product("WIDGET", stock=50)
    orders = [stack.place(customer, [("WIDGET", 1)]) for _ in range(4)]
    stack.work_until(lambda: _dependency(stack, "paydesk")["state"] == "open")
    _run_for(stack, 1.5)
    assert {stack.order(o["id"])["status"] for o in orders} == {"placed"}
    assert stack.order(orders[0]["id"])["waiting"]["dependency"] == "paydesk"
    stack.outside.paydesk_switches(outage=None)
    for order in orders:
        stack.work_until_status(order["id"], "delivered")
    refs = {o["reference"]: 1 for o in orders}
    assert stack.outside.paydesk_stats()["charges_by_order_reference"] == refs


@pytest.fixture
def paced_stack(database_url: str) -> Iterator[Stack]:
    with start_stack(database_url, bobs_post_rate_limit=8.0, worker_batch_size=50) as s:
        yield s


def test_the_backlog_drains_no_faster_than_the_carrier_allows(paced_stack: Stack) -> None:
    """With the carrier limited to 10/s and us pacing at 8/s, a backlog of 30 sees no 429."""
    stack = paced_stack
    stack.outside.carrier_switches(
        rate_limit_per_second=10, progress_seconds=3600, webhook_url=None
    )
    customer = stack.customer()
    stack.product("WIDGET", stock=50)
    orders = [stack.place(customer, [("WIDGET", 1)]) for _ in range(30)]
    started = time.monotonic()
    for order in orders:
        stack.work_until_status(order["id"], "scheduled", timeout=30)
    elapsed = time.monotonic() - started
    stats = stack.outside.carrier_stats()
    assert stats["requests_by_status"].get("429", 0) == 0
    assert elapsed >= (30 - 8) / 8 * 0.9  # one second of burst, then 8/s


def test_paced_calls_go_out_at_their_slots_not_in_a_burst(paced_stack: Stack) -> None:
    """Eight bookings claimed together at a pace of 8/s reach the carrier spread over about a
    second, each at its own slot on the shared schedule, not all at once."""
    stack = paced_stack
    stack.outside.carrier_switches(progress_seconds=3600, webhook_url=None)
    customer = stack.customer()
    stack.product("WIDGET", stock=50)
    started = time.time()
    orders = [stack.place(customer, [("WIDGET", 1)]) for _ in range(8)]
    for order in orders:
        stack.work_until_status(order["id"], "scheduled", timeout=30)
    log = httpx.get(f"{stack.outside.carrier.url}/_sim/requests", params={"since": started}).json()[
        "requests"
    ]
    sent = [t for t, kind, status in log if kind == "POST /v1/shipments" and status == 201]
    assert len(sent) == 8
    assert max(sent) - min(sent) >= 0.7  # slots 1/8 s apart; a burst arrives within ~0.1 s
    gaps = [b - a for a, b in pairwise(sent)]
    assert max(gaps) < 0.5


def test_429_with_retry_after_slows_every_worker_down(database_url: str) -> None:
    """Pacing at twice what the carrier allows: its 429s halve our shared pace; all get booked."""
    with start_stack(database_url, bobs_post_rate_limit=12.0) as stack:
        stack.outside.carrier_switches(
            rate_limit_per_second=6, progress_seconds=3600, webhook_url=None
        )
        customer = stack.customer()
        stack.product("WIDGET", stock=50)
        orders = [stack.place(customer, [("WIDGET", 1)]) for _ in range(30)]
        for order in orders:
            stack.work_until_status(order["id"], "scheduled", timeout=30)
        stats = stack.outside.carrier_stats()
        assert stats["bookings_by_reference"] == {o["reference"]: 1 for o in orders}
        assert 0 < stats["requests_by_status"].get("429", 0) <= len(orders)


def test_one_batch_of_failed_calls_opens_the_breaker(outage_stack: Stack) -> None:
    """Three bookings failing in one batch count as three failures: the breaker opens at once."""
    stack = outage_stack
    stack.outside.carrier_switches(outage="503")
    stack.product("WIDGET", stock=50)
    orders = [stack.place(stack.customer(), [("WIDGET", 1)]) for _ in range(3)]
    stack.work_until(lambda: all(stack.order(o["id"])["status"] == "paid" for o in orders))
    with stack.db.read() as session:
        waiting = session.scalar(
            select(func.count()).select_from(Task).where(Task.kind == "book", Task.attempts == 0)
        )
    assert waiting == 3  # not tried yet: the next batch tries all three at once
    stack.worker.run_once()
    assert _dependency(stack, "bobs_post")["state"] == "open"
    assert _attempts(stack, "book") == 3
