"""`orderflow bench lifecycle`: N orders through the whole lifecycle, and what each one cost.

Starts the simulators, a mail sink, `serve` and K workers as separate processes (the chaos
cluster, without faults) on a throwaway PostgreSQL database, places N orders from C clients while
the workers run, and waits until every one is delivered. Reports orders/s end to end, the CPU
per order of orderflow's own processes (serve, workers, their PostgreSQL backends) and, apart,
of the simulators, commits and rows written per order, and placed→paid / collected→"shipped"
e-mail latencies. With `burst`, a burst of orders goes in through `POST /orders/batch` at
the start, while the N orders come one by one (at `rate`): their latencies are then the
interactive orders' alone, so the priority lane shows. The same lifecycle on procrastinate,
DBOS and a plain state machine lives in `bench/peers/` (`e2e.py`) for interleaved comparisons
on the same machine.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import httpx

from orderflow.chaos.cluster import ADMIN_TOKEN, FAST_KNOBS, Cluster, ProcessGroup, cluster
from orderflow.chaos.run import throwaway_postgres

SKUS = ("BENCH-MUG", "BENCH-TEA", "BENCH-SPOON")
ORDERFLOW = ("serve", "worker")
SIMULATORS = ("bobs-post", "paydesk", "mailsink")
SIMULATOR_RATE_LIMIT = 1_000_000


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """The most memory the process held at once (its resident set's high-water mark)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    kib = next((line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    return int(kib) / 1024


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Result:
    orders: int
    workers: int
    delivered: int = 0
    seconds: float = 0.0
    placement_seconds: float = 0.0
    cpu_ms: dict[str, float] = field(default_factory=dict)  # per order, by process
    peak_rss_mib: dict[str, float] = field(default_factory=dict)  # by process
    commits_per_order: float = 0.0
    rows_per_order: float = 0.0
    latency: dict[str, float | None] = field(default_factory=dict)
    load: tuple[float, ...] = ()
    burst: int = 0  # orders placed in batches at the start, besides `orders`
    burst_seconds: float = 0.0
    refused: dict[str, int] = field(default_factory=dict)  # 429/503 answers, by intake

    @property
    def orders_per_second(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0

    @property
    def total(self) -> int:
        return self.orders + self.burst

    @property
    def own_cpu_ms(self) -> float:
        """orderflow's own processes: serve, workers and their PostgreSQL backends."""
        return sum(v for k, v in self.cpu_ms.items() if not k.startswith(SIMULATORS))

    def table(self) -> str:
        rows = [
            ("orders delivered", f"{self.delivered} of {self.total} ({self.workers} workers)"),
            ("end to end", f"{self.orders_per_second:.1f} orders/s ({self.seconds:.1f} s)"),
            ("placement", f"{self.orders / max(self.placement_seconds, 1e-9):.1f} orders/s"),
            ("CPU per order, orderflow", f"{self.own_cpu_ms:.1f} ms"),
        ]
        rows += [(f"  {k}", f"{v:.1f} ms") for k, v in sorted(self.cpu_ms.items())]
        rows += [
            (
                "peak memory (RSS)",
                ", ".join(f"{k} {v:.0f} MiB" for k, v in self.peak_rss_mib.items()),
            )
        ]
        rows += [
            ("commits per order", f"{self.commits_per_order:.2f}"),
            ("rows written per order", f"{self.rows_per_order:.1f}"),
        ]
        if self.burst:
            rate = self.burst / max(self.burst_seconds, 1e-9)
            rows.append(("burst (batches)", f"{self.burst} orders at {rate:.0f} orders/s"))
            rows += [(f"refused ({k})", str(v)) for k, v in sorted(self.refused.items())]
        rows += [(k, "-" if v is None else f"{v * 1000:.0f} ms") for k, v in self.latency.items()]
        rows.append(("load average", " ".join(f"{x:.2f}" for x in self.load)))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _pg_stats(stack: Cluster) -> dict[str, int]:
    [row] = stack.sql(
        "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted AS rows "
        "FROM pg_stat_database WHERE datname = current_database()"
    )
    return {"commits": int(row[0]), "rows": int(row[1])}


def _backend_pids(stack: Cluster) -> list[int]:
    rows = stack.sql(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()"
    )
    return [int(r[0]) for r in rows]


def run(
    orders: int,
    workers: int,
    clients: int,
    database_url: str | None,
    *,
    rate: float | None = None,
    default_settings: bool = False,
    burst: int = 0,
) -> Result:
    """One measured run (blocking); prints progress bars on stderr.

    `rate`: place at most this many orders a second (open loop: order i is due i/rate seconds
    after the start), for latencies at a steady load instead of a burst. `default_settings`:
    the product's defaults (idle poll, retries, leases, hourly tracking polls) instead of the
    chaos cluster's fast knobs; the outside services' rate limits are out of the way either way.
    """
    with (
        tempfile.TemporaryDirectory(prefix="orderflow-bench-") as tmp,
        _database(database_url) as url,
    ):
        group = ProcessGroup(Path(tmp))
        knobs = {
            **({} if default_settings else FAST_KNOBS),
            "ORDERFLOW_BOBS_POST_RATE_LIMIT": "100000",
            "ORDERFLOW_PAYDESK_RATE_LIMIT": "100000",
        }
        try:
            with cluster(group, url, knobs) as stack:
                return _measure(stack, orders, workers, clients, rate, burst)
        finally:
            group.stop_all()


def _database(database_url: str | None) -> AbstractContextManager[str]:
    return nullcontext(database_url) if database_url else throwaway_postgres()


def _measure(
    stack: Cluster, orders: int, workers: int, clients: int, rate: float | None, burst: int
) -> Result:
    stack.start_outside_and_serve(progress_seconds=0.2)
    # The simulators' own rate limits out of the way too (as the peers' harness does): a 429
    # retried would measure the retry policy, not the engine.
    stack.carrier_switches(rate_limit_per_second=SIMULATOR_RATE_LIMIT)
    stack.paydesk_switches(rate_limit_per_second=SIMULATOR_RATE_LIMIT)
    for sku in SKUS:
        stack.create_product(sku, stock=(orders + burst) * 10)
    customers = [stack.create_customer(i) for i in range(1, 21)]
    for i in range(workers):
        stack.start_worker(f"w{i + 1}")
    processes = {p.name: p.pid for p in stack.group.snapshot() if p.alive()}
    result = Result(orders=orders, workers=workers, burst=burst)
    stats_before = _pg_stats(stack)
    cpu_before = {name: cpu_seconds(pid) for name, pid in processes.items()}
    backends_before = {pid: cpu_seconds(pid) for pid in _backend_pids(stack)}
    started = time.monotonic()
    bursting = threading.Thread(target=_burst, args=(stack, burst, customers, result))
    bursting.start()
    result.refused["POST /orders"] = _place(stack, orders, clients, customers, rate)
    result.placement_seconds = time.monotonic() - started
    bursting.join()
    result.delivered = _wait_delivered(stack, orders + burst)
    result.seconds = time.monotonic() - started
    n = max(1, result.delivered)
    for name, pid in processes.items():
        key = "worker" if name.startswith("worker") else name
        spent = (cpu_seconds(pid) - cpu_before[name]) * 1000 / n
        result.cpu_ms[key] = result.cpu_ms.get(key, 0.0) + spent
        if name.startswith(ORDERFLOW):
            result.peak_rss_mib[name] = peak_rss_mib(pid)
    backends = sum(cpu_seconds(p) - backends_before.get(p, 0.0) for p in _backend_pids(stack))
    result.cpu_ms["postgres backends"] = backends * 1000 / n
    stats_after = _pg_stats(stack)
    result.commits_per_order = (stats_after["commits"] - stats_before["commits"]) / n
    result.rows_per_order = (stats_after["rows"] - stats_before["rows"]) / n
    result.latency = _latencies(stack, burst > 0)
    result.load = os.getloadavg()
    return result


def _body(i: int, customers: list[int]) -> dict[str, Any]:
    return {
        "customer_id": customers[i % len(customers)],
        "lines": [{"sku": SKUS[i % len(SKUS)], "quantity": 1 + i % 3}],
    }


def _post(http: httpx.Client, path: str, body: dict[str, Any], key: str | None) -> int:
    """POST until accepted, waiting as told on 429/503; returns how many refusals it took."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    if key:
        headers["Idempotency-Key"] = key
    refused = 0
    while True:
        response = http.post(path, json=body, headers=headers)
        if response.status_code in (200, 202):
            return refused
        if response.status_code not in (429, 503):
            raise click.ClickException(f"placement refused: {response.text[:200]}")
        refused += 1
        time.sleep(float(response.headers.get("Retry-After", "1")))


def _place(
    stack: Cluster, orders: int, clients: int, customers: list[int], rate: float | None
) -> int:
    """Place `orders` one by one; returns how many 429/503 answers they met."""
    lock = threading.Lock()
    bar = click.progressbar(length=orders, label="placed   ", file=sys.stderr)
    start = time.monotonic()
    refusals = [0] * clients

    def client(index: int) -> None:
        with httpx.Client(base_url=stack.api_url, timeout=60) as http:
            for i in range(index, orders, clients):
                if rate is not None:
                    time.sleep(max(0.0, start + i / rate - time.monotonic()))
                refusals[index] += _post(http, "/api/v1/orders", _body(i, customers), f"bench-{i}")
                with lock:
                    bar.update(1)

    with bar, ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return sum(refusals)


def _burst(stack: Cluster, burst: int, customers: list[int], result: Result) -> None:
    """`burst` orders through POST /orders/batch, 1,000 a request, four requests at a time."""
    size, started = 1_000, time.monotonic()
    chunks = [range(at, min(burst, at + size)) for at in range(0, burst, size)]

    def send(chunk: range) -> int:
        entries = [_body(i, customers) | {"idempotency_key": f"burst-{i}"} for i in chunk]
        with httpx.Client(base_url=stack.api_url, timeout=120) as http:
            return _post(http, "/api/v1/orders/batch", {"orders": entries}, None)

    with ThreadPoolExecutor(4) as pool:
        refused = sum(pool.map(send, chunks))
    result.burst_seconds = time.monotonic() - started
    if burst:
        result.refused["POST /orders/batch"] = refused


def _wait_delivered(stack: Cluster, orders: int, stall_seconds: float = 90.0) -> int:
    """Until every order is delivered, or nothing at all happened for `stall_seconds`.

    Progress is any new history entry, not only a delivery: behind a large backlog the lanes
    put payments first, and no order is delivered for minutes while the worker is busy."""
    bar = click.progressbar(length=orders, label="delivered", file=sys.stderr)
    seen, latest, last_change = 0, 0, time.monotonic()
    with bar:
        while seen < orders and time.monotonic() - last_change < stall_seconds:
            [row] = stack.sql(
                "SELECT (SELECT count(*) FROM orders WHERE status = 'delivered'),"
                " (SELECT coalesce(max(id), 0) FROM audit_entries)"
            )
            count, entry = int(row[0]), int(row[1])
            if count != seen:
                bar.update(count - seen)
                seen = count
            if entry != latest:
                latest, last_change = entry, time.monotonic()
            time.sleep(0.2)
    return seen


def _latencies(stack: Cluster, apart: bool) -> dict[str, float | None]:
    """Placed → paid and collected → "shipped" e-mail; `apart`: one-by-one orders and the
    burst's separately (told by their Idempotency-Keys)."""
    groups = {"": None} if not apart else {"": "bench-%", " (burst)": "burst-%"}
    latency: dict[str, float | None] = {}
    for label, keys in groups.items():
        only = "" if keys is None else f" AND o.idempotency_key LIKE '{keys}'"
        paid = [
            float(r[0])
            for r in stack.sql(
                "SELECT extract(epoch FROM a.at - o.created_at) FROM orders o "
                "JOIN audit_entries a ON a.order_id = o.id AND a.to_status = 'paid'" + only
            )
        ]
        mailed = [
            float(r[0])
            for r in stack.sql(
                "SELECT extract(epoch FROM m.at - c.at) FROM audit_entries c "
                "JOIN audit_entries m ON m.order_id = c.order_id AND m.action = 'email.shipped' "
                "JOIN orders o ON o.id = c.order_id WHERE c.to_status = 'shipped'" + only
            )
        ]
        latency |= {
            f"placed → paid p50{label}": percentile(paid, 0.5),
            f"placed → paid p99{label}": percentile(paid, 0.99),
            f"shipped → e-mail p50{label}": percentile(mailed, 0.5),
            f"shipped → e-mail p99{label}": percentile(mailed, 0.99),
        }
    return latency
