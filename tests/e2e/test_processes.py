"""orderflow as real separate processes: simulators, mail sink, `serve`, several `worker`s.

Everything is checked where the outside world sees it: the Paydesk and Bob's Post simulators'
counters, the mail sink's messages, and the stock the API reports.
"""

from __future__ import annotations

import random
import re
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import (
    E2EStack,
    ProcessGroup,
    e2e_stack,
    wait_log_line,
    wait_until,
)

pytestmark = pytest.mark.e2e

DONE = {"shipped", "delivered"}
REFERENCE = re.compile(r"ORD-\d+")


@contextmanager
def without_deadlocks(group: ProcessGroup) -> Iterator[None]:
    """After the block: no process logged a PostgreSQL deadlock (workers lock in one order)."""
    yield
    deadlocks = group.deadlocks()
    assert not deadlocks, f"deadlocks logged: {dict(deadlocks)}"


@dataclass
class Placed:
    """What the test placed: each order's lines by reference, and the quantities per SKU."""

    lines: dict[str, list[tuple[str, int]]]
    quantities: Counter[str]
    seconds: float

    @property
    def references(self) -> set[str]:
        return set(self.lines)


def arrange(stack: E2EStack, customers: int, stock: dict[str, int]) -> list[int]:
    """Customers with working cards and GB addresses, and products with ample stock."""
    for sku, units in stock.items():
        stack.create_product(sku, units)
    return [stack.create_customer(i) for i in range(1, customers + 1)]


def place_orders(
    stack: E2EStack, customer_ids: list[int], skus: list[str], count: int, seed: int
) -> Placed:
    """`count` orders of 1-2 lines through the API, 8 at a time, each with an Idempotency-Key."""
    rng = random.Random(seed)
    wanted = []
    for i in range(count):
        chosen = rng.sample(skus, rng.randint(1, min(2, len(skus))))
        lines = [(sku, rng.randint(1, 3)) for sku in chosen]
        wanted.append((rng.choice(customer_ids), lines, f"e2e-{seed}-{i}"))
    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        orders = list(pool.map(lambda w: stack.place(*w), wanted))
    seconds = time.monotonic() - start
    placed = {o["reference"]: w[1] for o, w in zip(orders, wanted, strict=True)}
    assert len(placed) == count, "every Idempotency-Key must make its own order"
    quantities: Counter[str] = Counter()
    for lines in placed.values():
        for sku, quantity in lines:
            quantities[sku] += quantity
    return Placed(placed, quantities, seconds)


def shipped_mail_ids(stack: E2EStack) -> dict[str, list[str]]:
    """The Message-IDs of the "shipped" e-mails the sink received, by order reference (one
    entry per delivery: a resend of the same message appears twice)."""
    found: dict[str, list[str]] = defaultdict(list)
    for mail in stack.mails():
        subject = mail["subject"]
        match = REFERENCE.search(subject)
        if match and "shipped" in subject.lower():
            found[match.group(0)].append(mail["message_id"])
    return found


def wait_until_shipped_and_told(stack: E2EStack, placed: Placed, timeout: float) -> float:
    """Every order shipped or delivered and every customer told; returns the seconds waited."""
    seen: dict[str, Any] = {}

    def finished() -> bool:
        statuses = stack.statuses()
        mine = [statuses.get(r, "missing") for r in placed.references]
        seen["statuses"] = Counter(mine)
        if not all(status in DONE for status in mine):
            return False
        mails = shipped_mail_ids(stack)
        told = len(placed.references & set(mails))
        seen["told"] = told
        return told == len(placed.references)

    try:
        return wait_until(finished, timeout=timeout, every=0.5, what="all orders shipped")
    except AssertionError:
        waiting = stack.sql(
            "SELECT kind, status, count(*), max(attempts), max(last_error) FROM tasks "
            "WHERE status NOT IN ('done') GROUP BY kind, status"
        )
        raise AssertionError(
            f"not every order shipped and told within {timeout}s: statuses {seen.get('statuses')}"
            f", shipped e-mails for {seen.get('told', 0)}/{len(placed.references)}; "
            f"unfinished tasks (kind, status, n, max attempts, an error): {waiting}"
        ) from None


@dataclass
class OnceFigures:
    charges: int
    charge_dups: int
    bookings: int
    booking_dups: int
    shipped_mails: int
    raw_mail_dups: int


def check_exactly_once(stack: E2EStack, placed: Placed, stock: dict[str, int]) -> OnceFigures:
    """One charge, one booking, one "shipped" Message-ID per order; stock down by what sold."""
    refs = placed.references
    time.sleep(1.0)  # anything late (a retry, a duplicate) has time to show up
    charges = stack.paydesk_stats()["charges_by_order_reference"]
    bookings = stack.carrier_stats()["bookings_by_reference"]
    mails = shipped_mail_ids(stack)
    mail_stats = stack.mail_stats()

    assert set(charges) == refs, f"charged {len(charges)} references for {len(refs)} orders"
    charge_dups = {r: n for r, n in charges.items() if n != 1}
    assert not charge_dups, f"charged more than once: {charge_dups}"
    assert set(bookings) == refs, f"booked {len(bookings)} references for {len(refs)} orders"
    booking_dups = {r: n for r, n in bookings.items() if n != 1}
    assert not booking_dups, f"booked more than once: {booking_dups}"
    assert set(mails) == refs, f"shipped e-mails for {len(mails)} of {len(refs)} orders"
    two_ids = {r: sorted(set(ids)) for r, ids in mails.items() if len(set(ids)) != 1}
    assert not two_ids, f"more than one distinct shipped e-mail: {two_ids}"
    for sku, units in stock.items():
        assert stack.stock(sku) == units - placed.quantities[sku], f"stock of {sku}"
    dead = stack.sql("SELECT kind, last_error FROM tasks WHERE status = 'dead'")
    assert not dead, f"dead letters: {dead}"
    return OnceFigures(
        charges=len(charges),
        charge_dups=sum(n - 1 for n in charges.values()),
        bookings=len(bookings),
        booking_dups=sum(n - 1 for n in bookings.values()),
        shipped_mails=len(mails),
        raw_mail_dups=int(mail_stats["duplicates"]),
    )


def wait_until_holding(stack: E2EStack, worker: str) -> None:
    """Until the database shows `worker` holding leased tasks (status `running`)."""
    wait_until(
        lambda: stack.running_leases(worker) > 0,
        timeout=20,
        every=0.02,
        what=f"{worker} holding leased tasks",
    )


def attempts_by_worker(stack: E2EStack) -> dict[str, int]:
    rows = stack.sql("SELECT worker, count(*) FROM task_attempts GROUP BY worker")
    return {str(worker): int(n) for worker, n in rows}


def deadlock_note(group: ProcessGroup) -> str:
    deadlocks = group.deadlocks()
    return f"; PostgreSQL deadlocks logged {dict(deadlocks)}" if deadlocks else ""


def say(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """The figures line, shown on the terminal even when output is captured."""
    with capsys.disabled():
        print(f"\n{line}")


def throughput_run(
    stack: E2EStack,
    capsys: pytest.CaptureFixture[str],
    *,
    orders: int,
    workers: list[str],
    timeout: float,
    label: str,
) -> None:
    """Place `orders` through serve with `workers` running; all ship, each effect once."""
    stock = {"E2E-MUG": 10_000, "E2E-TEA": 10_000, "E2E-SPOON": 10_000}
    stack.start_outside_and_serve()
    for name in workers:
        stack.start_worker(name, wait=False)
    customers = arrange(stack, 20, stock)
    for name in workers:  # started above, all at once; up before the clock starts
        wait_log_line(stack.workers[name], "worker.started")
    start = time.monotonic()
    placed = place_orders(stack, customers, sorted(stock), orders, seed=orders)
    wait_until_shipped_and_told(stack, placed, timeout)
    seconds = time.monotonic() - start
    once = check_exactly_once(stack, placed, stock)
    assert once.raw_mail_dups == 0, "no crash here, so not even a same-Message-ID resend"

    by_worker = attempts_by_worker(stack)
    idle = [name for name in workers if by_worker.get(name, 0) == 0]
    assert not idle, f"workers that did nothing: {idle} (attempts by worker: {by_worker})"
    assert all(stack.workers[name].alive() for name in workers)
    say(
        capsys,
        f"e2e[{label}]: {orders} orders shipped in {seconds:.1f}s "
        f"(placed in {placed.seconds:.1f}s); charges {once.charges} (dup {once.charge_dups}), "
        f"bookings {once.bookings} (dup {once.booking_dups}), shipped e-mails "
        f"{once.shipped_mails} (dup {once.raw_mail_dups}); task attempts by worker {by_worker}"
        f"{deadlock_note(stack.group)}",
    )


@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_200_orders_through_serve_and_two_workers_on_postgresql(
    own_pg_url: str, processes: ProcessGroup, capsys: pytest.CaptureFixture[str]
) -> None:
    """200 orders through serve + 2 worker processes on PostgreSQL: all ship, each effect once."""
    with e2e_stack(processes, own_pg_url) as stack, without_deadlocks(processes):
        throughput_run(
            stack, capsys, orders=200, workers=["w1", "w2"], timeout=120, label="postgresql"
        )


@pytest.mark.timeout(150)
def test_50_orders_through_serve_and_a_worker_on_sqlite(
    tmp_path: Path, processes: ProcessGroup, capsys: pytest.CaptureFixture[str]
) -> None:
    """50 orders through serve + 1 worker process sharing one SQLite file: all ship, once each."""
    with e2e_stack(processes, f"sqlite:///{tmp_path}/e2e.db") as stack:
        throughput_run(stack, capsys, orders=50, workers=["solo"], timeout=90, label="sqlite")


@pytest.mark.postgres
@pytest.mark.timeout(150)
def test_kill_9_workers_mid_batch_loses_nothing_and_repeats_nothing(
    own_pg_url: str, processes: ProcessGroup, capsys: pytest.CaptureFixture[str]
) -> None:
    """Workers killed -9 while holding leased work: every order still ships, each effect once."""
    stock = {"E2E-MUG": 10_000, "E2E-TEA": 10_000}
    rng = random.Random(2024)
    with e2e_stack(processes, own_pg_url) as stack, without_deadlocks(processes):
        stack.start_outside_and_serve()
        stack.start_worker("steady", wait=False)
        customers = arrange(stack, 10, stock)
        # Slow, ambiguous outside calls keep batches in flight: Paydesk charges and then hangs
        # 1 s before a 504; half of Bob's Post's bookings do the same. A kill in that second
        # leaves an effect done outside that its worker never recorded.
        stack.paydesk_switches(ambiguous_rate=1.0, ambiguous_mode="hang", hang_seconds=1.0)
        stack.carrier_switches(ambiguous_rate=0.5, ambiguous_mode="hang", hang_seconds=1.0)
        victim = stack.start_worker("victim1")
        start = time.monotonic()
        placed = place_orders(stack, customers, sorted(stock), 100, seed=9)

        # Kill at random moments of the run, each time while the victim holds leased work
        # (checked in the database before the kill, and again after it: what it died holding).
        held_at_kill: dict[str, dict[str, int]] = {}  # victim -> task kind -> tasks
        held_ids: dict[str, list[int]] = {}
        between_batches = 0
        for round_ in range(1, 10):
            name = f"victim{round_}"
            time.sleep(rng.uniform(0.0, 1.5))
            wait_until_holding(stack, name)
            victim.kill9()
            assert victim.popen.returncode == -signal.SIGKILL
            held = stack.sql(
                "SELECT id, kind, key FROM tasks WHERE status = 'running' "
                "AND lease_owner LIKE :owner",
                owner=f"{name}/%",
            )
            if held:
                held_at_kill[name] = dict(Counter(kind for _, kind, _ in held))
                # A periodic job leaves no attempt record when it succeeds: judge the rest.
                held_ids[name] = [i for i, _, key in held if not key.startswith("periodic:")]
            else:  # its batch was committed between the check and the kill
                between_batches += 1
            if len(held_at_kill) == 3:
                break
            victim = stack.start_worker(f"victim{round_ + 1}")
        assert len(held_at_kill) == 3, f"only {len(held_at_kill)} kills landed mid-batch"

        stack.paydesk_switches(ambiguous_rate=0.0)
        stack.carrier_switches(ambiguous_rate=0.0)
        stack.start_worker("replacement")
        wait_until_shipped_and_told(stack, placed, timeout=75)
        seconds = time.monotonic() - start
        once = check_exactly_once(stack, placed, stock)
        for name, ids in held_ids.items():  # each was taken over and finished by another
            if not ids:
                continue
            finished = stack.sql(
                "SELECT DISTINCT task_id FROM task_attempts WHERE worker != :name "
                f"AND outcome = 'ok' AND task_id IN ({', '.join(map(str, ids))})",
                name=name,
            )
            assert len(finished) == len(ids), f"tasks {name} died holding were not all finished"
        say(
            capsys,
            f"e2e[kill -9]: 100 orders shipped in {seconds:.1f}s through {len(held_at_kill)} "
            f"kill -9s mid-batch (+{between_batches} between batches); tasks held by the killed "
            f"workers at kill time {held_at_kill}, all finished by others; charges "
            f"{once.charges} (dup {once.charge_dups}), bookings {once.bookings} "
            f"(dup {once.booking_dups}), shipped e-mails {once.shipped_mails} distinct per "
            f"order (dup 0; raw same-Message-ID redeliveries {once.raw_mail_dups}); attempts "
            f"by worker {attempts_by_worker(stack)}{deadlock_note(processes)}",
        )


@pytest.mark.postgres
@pytest.mark.timeout(90)
def test_sigterm_stops_a_worker_cleanly_and_releases_its_work(
    own_pg_url: str, processes: ProcessGroup, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM mid-batch: the worker exits 0 within seconds, holding no lease; work goes on."""
    stock = {"E2E-MUG": 1_000}
    with e2e_stack(processes, own_pg_url) as stack, without_deadlocks(processes):
        stack.start_outside_and_serve()
        customers = arrange(stack, 5, stock)
        stack.paydesk_switches(ambiguous_rate=1.0, ambiguous_mode="hang", hang_seconds=1.0)
        placed = place_orders(stack, customers, sorted(stock), 20, seed=3)
        worker = stack.start_worker("term")
        wait_until_holding(stack, "term")
        held = stack.running_leases("term")

        start = time.monotonic()
        code = worker.terminate(grace=15)
        took = time.monotonic() - start
        assert code == 0, f"exit code {code}:\n{worker.tail()}"
        assert took < 5, f"took {took:.1f}s to stop"
        assert stack.running_leases("term") == 0
        assert "received SIGTERM" in worker.log()
        assert "worker.stopped" in worker.log()

        stack.paydesk_switches(ambiguous_rate=0.0)
        stack.start_worker("after")
        wait_until_shipped_and_told(stack, placed, timeout=40)
        once = check_exactly_once(stack, placed, stock)
        say(
            capsys,
            f"e2e[SIGTERM]: worker held {held} tasks, exited 0 in {took:.1f}s holding none; "
            f"then 20 orders shipped with charges {once.charges} (dup {once.charge_dups}), "
            f"bookings {once.bookings} (dup {once.booking_dups})",
        )
