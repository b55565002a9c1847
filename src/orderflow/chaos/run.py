"""The chaos scenario: real processes, every fault at once, checked at the simulators and the sink.

Timeline of `run`:

1. migrate the database; start the mail sink, Bob's Post, Paydesk, `serve` and N workers as
   separate processes, with time compressed through the ORDERFLOW_* knobs (`CHAOS_KNOBS`: the
   outage lasts many times the retry cap, the lease and the breaker's probe interval);
2. switch the misbehaviour on: 20 % ambiguous answers on both gateways (a Paydesk charge that is
   taken and then never answered within the HTTP timeout; a Bob's Post booking that is made and
   then answered 504), 30 % duplicated, 30 % lost and ~1 s shuffled webhooks, and a Bob's Post
   rate limit below orderflow's pace so that 429s happen; from now on a random worker is killed
   with SIGKILL every `kill_every` seconds (±50 %) and restarted at once, until the end;
3. Bob's Post goes down (503), then the orders are placed concurrently through the API, each
   with an Idempotency-Key (a transport error or a 5xx is retried with the same key); every 202
   is an order that must not be lost. The carrier is down before the first order exists, so
   every booking meets the outage whatever the relative speed of placing and booking;
4. the outage goes on: 503 for `outage_seconds` after the last order was placed, then hanging
   connections (longer than the HTTP timeout) for `outage_seconds` more, then Bob's Post is up
   again; meanwhile (after placement: the steady part of the outage) every orderflow process,
   serve and the workers, is sampled: RSS, database connections, log bytes;
5. wait (bounded) until every accepted order is shipped or delivered (the recovery time), and
   every customer has the "shipped" e-mail; stop killing; wait until the backlog is gone;
6. gather the evidence (the API's orders and histories, the simulators' counters, Bob's Post's
   request log, the sink's messages, dead letters, stock) and let `checks` count and judge it
   (the drain rate after the outage is reported, not judged).

Kills go on during the outage, except for one witness: worker slot w1 is not killed from the
moment the last order is placed until Bob's Post is back (with a single worker, nobody is
killed meanwhile; kills go on before and after, during placement and the recovery). Memory and
connections are compared within each process's own life (its first sample after a warm-up
against its last) and judged on the processes sampled over at least half of the outage:
`serve` and the witness. A restarted worker starts a new series instead of being compared with
the one it replaced; its figures are in the JSON (`resources.series`), but a process a few
seconds old is still warming up (imports, thread pool, connection pool) and proves nothing
either way. Log volume per second is measured on every process past its start-up, window by
window, and compared between the first and the last third of the sampled outage.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from orderflow.chaos import checks, probes
from orderflow.chaos.checks import BacklogSample, Evidence, Figures, ProcessSample, Sample
from orderflow.chaos.cluster import (
    Cluster,
    ClusterError,
    Proc,
    ProcessGroup,
    cluster,
    wait_log_line,
)

CHAOS_KNOBS = {
    "ORDERFLOW_RETRY_BASE_SECONDS": "0.1",
    "ORDERFLOW_RETRY_MAX_SECONDS": "2",
    "ORDERFLOW_LEASE_SECONDS": "5",
    "ORDERFLOW_HTTP_TIMEOUT_SECONDS": "1",
    "ORDERFLOW_TRACKING_POLL_SECONDS": "3",
    "ORDERFLOW_BREAKER_PROBE_SECONDS": "2",
    "ORDERFLOW_BREAKER_FAILURE_THRESHOLD": "5",
    "ORDERFLOW_WORKER_IDLE_SECONDS": "0.1",
}
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SKUS = ("CHAOS-MUG", "CHAOS-TEA", "CHAOS-SPOON")


@dataclass(frozen=True)
class ChaosOptions:
    """One chaos run; the defaults are the CI-sized run on SQLite."""

    orders: int = 150
    workers: int = 1
    database_url: str | None = None  # None: a fresh SQLite file in the run's directory
    outage_seconds: float = 8.0  # each of the 503 phase and the hang phase
    kill_every: float = 4.0  # seconds between kill -9s (±50 %); 0: never
    seed: int = 1
    customers: int = 20
    ambiguous_rate: float = 0.2
    webhook_duplicate_rate: float = 0.3
    webhook_loss_rate: float = 0.3
    webhook_shuffle_seconds: float = 1.0
    # Well below orderflow's pace of Bob's Post (40/s): orderflow sends at its slots, so only a
    # carrier slower than the drain it can reach is sure to answer 429s.
    carrier_rate_limit: int = 10
    progress_seconds: float = 0.3  # a parcel's pace from one carrier status to the next
    hang_seconds: float = 3.0  # how long a hanging carrier request hangs (> the HTTP timeout)
    placement_threads: int = 8
    recovery_timeout: float | None = None  # None: 120 s + 0.2 s per order
    knobs: Mapping[str, str] = field(default_factory=lambda: dict(CHAOS_KNOBS))

    def recovery_limit(self) -> float:
        if self.recovery_timeout is not None:
            return self.recovery_timeout
        return 120.0 + 0.2 * self.orders


@dataclass
class ChaosReport:
    """The figures of a run, the promises it broke and the faults it never managed to inject."""

    figures: Figures
    violations: list[str]
    unseen_faults: list[str]
    logs: Path
    tails: str = ""  # the end of every process's log, when a promise was broken

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        return checks.summary(self.figures, self.violations, self.unseen_faults)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "violations": self.violations,
            "unseen_faults": self.unseen_faults,
            "figures": dataclasses.asdict(self.figures),
        }


@contextmanager
def throwaway_postgres(admin_dsn: str = PG_ADMIN_DSN) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one run, dropped afterwards (whatever happened)."""
    import psycopg

    name = f"orderflow_chaos_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(admin_dsn).set(drivername="postgresql+psycopg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


# --- the moving parts ---------------------------------------------------------------------------
class _Killer(threading.Thread):
    """Kills a random worker with SIGKILL every `every` seconds (±50 %) and restarts it at once
    under a new name (`w2.3`: slot w2, third incarnation; same log file as its predecessors)."""

    def __init__(self, stack: Cluster, slots: list[str], every: float, seed: int) -> None:
        super().__init__(name="chaos-killer", daemon=True)
        self.stack = stack
        self.every = every
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.current: dict[str, Proc] = {}
        self.generation: dict[str, int] = {}
        self.kills = 0
        self.spared: set[str] = set()  # slots not to kill for now
        self.error: BaseException | None = None
        for slot in slots:
            self.current[slot] = stack.start_worker(f"{slot}.1", wait=False, log_name=slot)
            self.generation[slot] = 1
        for proc in self.current.values():  # started together, then awaited
            wait_log_line(proc, "worker.started")

    def run(self) -> None:
        if self.every <= 0:
            return
        try:
            while not self.halt.wait(self.rng.uniform(0.5, 1.5) * self.every):
                self.kill_one()
        except BaseException as exc:  # reported by the run, never lost in a thread
            self.error = exc

    def kill_one(self) -> None:
        with self.lock:
            slots = sorted(set(self.current) - self.spared)
            if not slots:
                return
            slot = self.rng.choice(slots)
            proc = self.current[slot]
            if proc.alive():  # one that exited by itself is reported at the end
                try:
                    proc.kill9()
                    self.kills += 1
                except ProcessLookupError:
                    proc.popen.wait(timeout=10)
            self.generation[slot] += 1
            name = f"{slot}.{self.generation[slot]}"
            self.current[slot] = self.stack.start_worker(name, wait=False, log_name=slot)

    def stop(self) -> None:
        self.halt.set()
        if self.is_alive():
            self.join(timeout=30)


class _Monitor(threading.Thread):
    """Reads `GET /dependencies` every second: the backlog and breaker state over time."""

    def __init__(self, stack: Cluster, start: float) -> None:
        super().__init__(name="chaos-monitor", daemon=True)
        self.stack = stack
        self.start_at = start
        self.halt = threading.Event()
        self.samples: list[BacklogSample] = []

    def run(self) -> None:
        while not self.halt.wait(1.0):
            try:
                deps = self.stack.dependencies()
            except (httpx.HTTPError, ClusterError):
                continue  # serve busy or restarting: the next second will tell
            self.samples.append(
                BacklogSample(
                    at=time.monotonic() - self.start_at,
                    backlog={d["name"]: int(d["backlog"]["tasks"]) for d in deps},
                    states={d["name"]: str(d["state"]) for d in deps},
                )
            )

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)


def _orderflow_processes(group: ProcessGroup) -> list[Proc]:
    return [
        p
        for p in group.snapshot()
        if p.alive() and (p.name == "serve" or p.name.startswith("worker-"))
    ]


def sample(group: ProcessGroup, target: probes.DatabaseTarget, at: float, phase: str) -> Sample:
    """Every live orderflow process, now (PostgreSQL backends are added by the caller)."""
    now = time.monotonic()
    return Sample(
        at=at,
        phase=phase,
        processes=tuple(
            ProcessSample(
                name=p.log_path.stem,
                pid=p.pid,
                age=now - p.started_at,
                rss_kib=probes.rss_kib(p.pid),
                db_connections=probes.db_connections(p.pid, target),
                log_bytes=probes.file_size(p.log_path),
            )
            for p in _orderflow_processes(group)
        ),
        backends=None,
    )


def dead_events(group: ProcessGroup) -> list[dict[str, Any]]:
    """Every `task.dead` event the workers logged (a dead letter later redriven counts too)."""
    found = []
    for path in sorted({p.log_path for p in group.snapshot() if p.name.startswith("worker-")}):
        with path.open(errors="replace") as log:
            for line in log:
                if line.startswith("{") and '"task.dead"' in line:
                    try:
                        found.append(dict(json.loads(line)))
                    except ValueError:
                        found.append({"error": line.strip()})
    return found


# --- the scenario -------------------------------------------------------------------------------
class _Scenario:
    """The steps of the timeline (see the module docstring) and what they recorded."""

    def __init__(self, options: ChaosOptions, stack: Cluster, say: Callable[[str], None]) -> None:
        self.o = options
        self.stack = stack
        self.say = say
        self.rng = random.Random(options.seed)
        self.start = time.monotonic()
        self.is_pg = not stack.database_url.startswith("sqlite")
        self.target = probes.DatabaseTarget.of(stack.database_url, stack.group.directory)
        self.stock = {sku: options.orders * 3 + 100 for sku in SKUS}
        self.accepted: dict[str, int] = {}
        self.ordered: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.lock = threading.Lock()  # placement threads record into the three above
        self.samples: list[Sample] = []
        self.carrier_503 = self.carrier_hung = 0
        self.before: dict[str, int] = {}
        self.went_down = time.monotonic()
        self.down_at = self.back_at = time.time()  # unix times, as in the carrier's request log

    def elapsed(self) -> str:
        return f"[{time.monotonic() - self.start:6.1f}s]"

    def note(self, line: str) -> None:
        self.say(f"{self.elapsed()} {line}")

    # 2. misbehaviour
    def switch_faults_on(self) -> None:
        o = self.o
        self.stack.carrier_switches(
            ambiguous_rate=o.ambiguous_rate,
            ambiguous_mode="504",
            webhook_duplicate_rate=o.webhook_duplicate_rate,
            webhook_loss_rate=o.webhook_loss_rate,
            webhook_shuffle_seconds=o.webhook_shuffle_seconds,
            rate_limit_per_second=o.carrier_rate_limit,
            progress_seconds=o.progress_seconds,
        )
        timeout = float(o.knobs.get("ORDERFLOW_HTTP_TIMEOUT_SECONDS", "1"))
        self.stack.paydesk_switches(
            ambiguous_rate=o.ambiguous_rate, ambiguous_mode="hang", hang_seconds=timeout * 1.5
        )

    # 3. orders
    def arrange(self) -> list[int]:
        for sku, units in self.stock.items():
            self.stack.create_product(sku, units)
        return [self.stack.create_customer(i) for i in range(1, self.o.customers + 1)]

    def _place_one(self, wanted: tuple[int, list[tuple[str, int]], str]) -> None:
        customer, lines, key = wanted
        outcome = "no answer"
        for attempt in range(5):
            try:
                response = self.stack.place_request(customer, lines, key)
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            else:
                if response.status_code == 202:
                    body = response.json()
                    with self.lock:
                        self.accepted[str(body["reference"])] = int(body["id"])
                        for sku, quantity in lines:
                            self.ordered[sku] += quantity
                    return
                outcome = str(response.status_code)
                if response.status_code < 500:
                    break
            time.sleep(0.2 * (attempt + 1))
        with self.lock:
            self.rejected[outcome] += 1

    def place(self, customers: list[int]) -> float:
        wanted = []
        for i in range(self.o.orders):
            chosen = self.rng.sample(SKUS, self.rng.randint(1, 2))
            lines = [(sku, self.rng.randint(1, 3)) for sku in chosen]
            wanted.append((self.rng.choice(customers), lines, f"chaos-{self.o.seed}-{i}"))
        started = time.monotonic()
        with ThreadPoolExecutor(self.o.placement_threads) as pool:
            list(pool.map(self._place_one, wanted))
        return time.monotonic() - started

    # 4. the outage, sampled
    def _sample(self, at: float, phase: str) -> None:
        taken = sample(self.stack.group, self.target, at, phase)
        if self.is_pg:
            rows = self.stack.sql(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            taken = dataclasses.replace(taken, backends=int(rows[0][0]))
        self.samples.append(taken)

    def carrier_down(self) -> None:
        """Bob's Post answers 503 from now on (before any order exists: every booking meets it)."""
        self.before = self.stack.carrier_stats()["requests_by_status"]
        self.went_down = time.monotonic()
        self.down_at = time.time()
        self.stack.carrier_switches(outage="503")

    def outage(self) -> float:
        """503 for `outage_seconds` more, then hanging for `outage_seconds`, sampling every
        orderflow process all along; then Bob's Post is up again. Returns the outage's length."""
        o = self.o
        every = max(0.5, min(2.0, o.outage_seconds / 10))
        began = time.monotonic()
        middle: dict[str, Any] = {}
        for phase, until in (("503", o.outage_seconds), ("hang", 2 * o.outage_seconds)):
            while (at := time.monotonic() - began) < until:
                self._sample(at, phase)
                time.sleep(min(every, max(0.0, until - (time.monotonic() - began))))
            if phase == "503":
                middle = self.stack.carrier_stats()
                self.stack.carrier_switches(outage="hang", hang_seconds=o.hang_seconds)
                self.note(
                    f"Bob's Post hangs: connections held {o.hang_seconds}s for {o.outage_seconds}s"
                )
        self._sample(time.monotonic() - began, "hang")
        end = self.stack.carrier_stats()
        self.stack.carrier_switches(outage=None)
        self.back_at = time.time()  # the drain is measured from here
        self.carrier_503 = int(middle["requests_by_status"].get("503", 0)) - int(
            self.before.get("503", 0)
        )
        self.carrier_hung = int(end["requests"]) - int(middle["requests"])
        return time.monotonic() - self.went_down

    # 5. recovery
    def wait_shipped(self, deadline: float) -> bool:
        every = 0.5 if len(self.accepted) <= 2000 else 2.0
        while True:
            try:
                statuses = self.stack.statuses()
            except (httpx.HTTPError, ClusterError):
                statuses = {}
            done = sum(1 for r in self.accepted if statuses.get(r) in checks.DONE)
            if done == len(self.accepted):
                return True
            if time.monotonic() > deadline:
                self.note(f"gave up waiting: {done}/{len(self.accepted)} shipped")
                return False
            time.sleep(every)

    def wait_told(self, deadline: float) -> bool:
        while True:
            try:
                distinct = int(self.stack.mail_stats()["distinct_message_ids"])
            except (httpx.HTTPError, ClusterError):
                distinct = 0
            if distinct >= len(self.accepted):
                mails = checks.shipped_message_ids(self.stack.mails())
                if set(self.accepted) <= set(mails):
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(1.0)

    def wait_no_backlog(self, timeout: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            backlog = {d["name"]: int(d["backlog"]["tasks"]) for d in self.stack.dependencies()}
            if not any(backlog.values()) or time.monotonic() > deadline:
                return backlog
            time.sleep(0.5)

    # 6. evidence
    def histories(self) -> dict[str, list[str | None]]:
        def one(item: tuple[str, int]) -> tuple[str, list[str | None]]:
            ref, order_id = item
            for attempt in range(3):
                try:
                    return ref, [e["to"] for e in self.stack.order(order_id)["history"]]
                except (httpx.HTTPError, ClusterError):
                    time.sleep(0.5 * (attempt + 1))
            return ref, []

        with ThreadPoolExecutor(8) as pool:
            return dict(pool.map(one, sorted(self.accepted.items())))


def run(options: ChaosOptions, directory: Path, say: Callable[[str], None] = print) -> ChaosReport:
    """Run the scenario with processes, logs and (by default) the SQLite file in `directory`;
    returns the figures and verdicts. Raises ClusterError if the cluster cannot be started."""
    directory.mkdir(parents=True, exist_ok=True)
    database_url = options.database_url or f"sqlite:///{directory.resolve()}/chaos.db"
    started_at = datetime.now(UTC)
    group = ProcessGroup(directory)
    try:
        with cluster(group, database_url, dict(options.knobs)) as stack:
            report = _run(options, stack, say, started_at)
        if not report.ok:
            report.tails = group.tails(30, latest=True)
        return report
    finally:
        group.stop_all()


def _run(
    o: ChaosOptions, stack: Cluster, say: Callable[[str], None], started_at: datetime
) -> ChaosReport:
    s = _Scenario(o, stack, say)
    s.note(
        f"starting simulators, mail sink, serve and {o.workers} worker(s); logs in "
        f"{stack.group.logs}"
    )
    stack.start_outside_and_serve(progress_seconds=o.progress_seconds, seed=o.seed)
    s.switch_faults_on()
    killer = _Killer(stack, [f"w{i}" for i in range(1, o.workers + 1)], o.kill_every, o.seed)
    monitor = _Monitor(stack, s.start)
    try:
        customers = s.arrange()
        monitor.start()
        killer.start()
        outage_began = datetime.now(UTC)
        s.carrier_down()
        s.note(
            f"Bob's Post down (503); placing {o.orders} orders ({o.placement_threads} at a time)"
        )
        placement = s.place(customers)
        s.note(
            f"accepted {len(s.accepted)} orders in {placement:.1f}s (rejected "
            f"{dict(s.rejected)}); Bob's Post stays down: 503 for {o.outage_seconds}s more"
        )
        with killer.lock:  # the witness lives through the outage (see the module docstring)
            killer.spared = {"w1"}
        outage = s.outage()
        outage_end = time.monotonic()
        with killer.lock:
            killer.spared = set()
        s.note("Bob's Post is back; waiting until every accepted order has shipped")
        deadline = outage_end + o.recovery_limit()
        recovery = time.monotonic() - outage_end if s.wait_shipped(deadline) else None
        if recovery is not None:
            s.note(f"every accepted order shipped {recovery:.1f}s after the outage")
        told = time.monotonic() - outage_end if s.wait_told(deadline + 30) else None
        killer.stop()
        s.note(f"stopped killing after {killer.kills} kill -9s; waiting for the backlog to drain")
        lease = float(o.knobs.get("ORDERFLOW_LEASE_SECONDS", "5"))
        final_backlog = s.wait_no_backlog(timeout=3 * lease + 30)
        time.sleep(1.0)  # anything late (a retry, a duplicate) has time to show up
        s.note("gathering the evidence")
        monitor.stop()
        exits = [  # every process not killed by the killer must still be running
            f"{p.describe()}:\n{p.tail(20)}"
            for p in stack.group.snapshot()
            if not p.alive() and p.popen.returncode != -signal.SIGKILL
        ]
        if killer.error is not None:
            exits.append(f"the killer thread failed: {killer.error!r}")
        carrier = stack.carrier_stats()
        paydesk = stack.paydesk_stats()
        dead = stack.dead_letters()
        listed = stack.listing()
        evidence = Evidence(
            scenario={
                "orders": o.orders,
                "workers": o.workers,
                "database": "postgresql" if s.is_pg else "sqlite",
                "outage_seconds": o.outage_seconds,
                "outage_shape": "503 while placing and outage_seconds more, then hang_seconds-long"
                " hangs for outage_seconds",
                "hang_seconds": o.hang_seconds,
                "kill_every": o.kill_every,
                "seed": o.seed,
                "ambiguous_rate": o.ambiguous_rate,
                "webhook_duplicate_rate": o.webhook_duplicate_rate,
                "webhook_loss_rate": o.webhook_loss_rate,
                "webhook_shuffle_seconds": o.webhook_shuffle_seconds,
                "carrier_rate_limit": o.carrier_rate_limit,
                "progress_seconds": o.progress_seconds,
                "knobs": dict(o.knobs),
                "started_at": started_at.isoformat(timespec="seconds"),
                "outage_began_at": outage_began.isoformat(timespec="milliseconds"),
                "machine": machine(),
            },
            accepted=dict(s.accepted),
            rejected=s.rejected,
            placement_seconds=placement,
            statuses={o["reference"]: o["status"] for o in listed},
            replaces={o["reference"]: o["replaces"] for o in listed if o.get("replaces")},
            histories=s.histories(),
            charges=dict(paydesk["charges_by_order_reference"]),
            bookings=dict(carrier["bookings_by_reference"]),
            mails=stack.mails(),
            dead_letters=int(dead["total"]),
            dead_letter_groups=list(dead["groups"]),
            dead_events=dead_events(stack.group),
            stock_sold={sku: units - stack.stock(sku) for sku, units in s.stock.items()},
            stock_ordered=dict(s.ordered),
            paydesk_by_status=dict(paydesk["requests_by_status"]),
            carrier_by_status=dict(carrier["requests_by_status"]),
            carrier_503_in_outage=s.carrier_503,
            carrier_requests_hung=s.carrier_hung,
            webhooks={
                "sent": int(carrier["webhooks_sent"]),
                "lost": int(carrier["webhooks_lost"]),
                "duplicated": int(carrier["webhooks_duplicated"]),
                "failed": int(carrier["webhooks_failed"]),
            },
            kills=killer.kills,
            unexpected_exits=exits,
            outage_seconds=outage,
            recovery_seconds=recovery,
            told_seconds=told,
            total_seconds=time.monotonic() - s.start,
            samples=s.samples,
            backlog=monitor.samples,
            final_backlog=final_backlog,
            carrier_requests=stack.carrier_requests(since=s.down_at),
            carrier_back_at=s.back_at,
        )
    finally:
        killer.stop()
        monitor.halt.set()
    figures = checks.figures(evidence)
    return ChaosReport(
        figures, checks.violations(figures), checks.unseen_faults(figures), stack.group.logs
    )
