"""Benchmark: how fast the backlog of bookings drains once Bob's Post answers again.

    python bench/drain.py --orders 10000 --workers 2 --rates 40 50
    python bench/drain.py --orders 2000 --rates 40 --keep-logs /tmp/drain   # quicker

For each configured rate R (`ORDERFLOW_BOBS_POST_RATE_LIMIT`), on a throwaway PostgreSQL
database (or `--database-url`): the processes of `orderflow chaos` (`orderflow.chaos.cluster`:
simulators, mail sink, `serve`, K workers) are started, Bob's Post goes down (503), N orders are
placed through the API and paid (Paydesk works), so every booking waits behind the open breaker.
Then Bob's Post comes back, and the bookings are counted at the simulator (its request log,
`GET /_sim/requests`) until all N are booked. No other fault is injected except lost webhooks
(so that tracking polls compete with bookings) and the carrier's own rate limit (50/s: above
it, 429). Retry and probe knobs are short, so the run measures the drain, not the waiting.

Webhooks are lost by default (`--webhook-loss 1`): the parcels still move (every 2 s), and
orderflow learns it by polling every 5 s, so polls compete with bookings for the carrier's
budget all through the drain. With webhooks on (a 300-order trial on main 7837db2), the
simulator, busy delivering them to a loaded `serve`, stopped answering for 5-16 s at a time:
the workers' 5 s timeouts opened the breaker, and the figure measured the simulator.

Prints one row per rate: bookings/s over the whole drain (carrier back -> last booking) and
over its steady middle 80 %, as a fraction of R; 429s, look-ups by reference and polls during
the drain; the time to drain; and what the breaker and the pace did meanwhile (from the
workers' logs). `--json` writes everything, with the per-second bookings and a once-a-second
record of `GET /dependencies`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx

from orderflow.chaos import checks
from orderflow.chaos.cluster import Cluster, ClusterError, ProcessGroup, cluster
from orderflow.chaos.run import machine, throwaway_postgres

KNOBS = {  # short waits: the drain is measured, not the backoff before it
    "ORDERFLOW_RETRY_BASE_SECONDS": "0.1",
    "ORDERFLOW_RETRY_MAX_SECONDS": "3",
    "ORDERFLOW_BREAKER_PROBE_SECONDS": "2",
    "ORDERFLOW_BREAKER_FAILURE_THRESHOLD": "5",
    "ORDERFLOW_LEASE_SECONDS": "15",
    "ORDERFLOW_HTTP_TIMEOUT_SECONDS": "5",
    "ORDERFLOW_TRACKING_POLL_SECONDS": "5",
    "ORDERFLOW_WORKER_IDLE_SECONDS": "0.1",
}
SKUS = ("DRAIN-MUG", "DRAIN-TEA")
EVENTS = ("dependency.down", "dependency.recovered", "dependency.throttled", "task.retry")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def place_all(stack: Cluster, orders: int, threads: int, seed: int) -> tuple[int, float]:
    """Place `orders` orders (Idempotency-Key, 5xx and transport errors retried): (accepted, s)."""
    for sku in SKUS:
        stack.create_product(sku, orders * 3 + 100)
    customers = [stack.create_customer(i) for i in range(1, 21)]
    rng = random.Random(seed)
    wanted = [
        (rng.choice(customers), [(rng.choice(SKUS), rng.randint(1, 3))], f"drain-{seed}-{i}")
        for i in range(orders)
    ]

    def one(item: tuple[int, list[tuple[str, int]], str]) -> bool:
        for attempt in range(5):
            try:
                if stack.place_request(*item).status_code == 202:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.2 * (attempt + 1))
        return False

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        accepted = sum(pool.map(one, wanted))
    return accepted, time.monotonic() - started


def wait_all_paid(stack: Cluster, orders: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        counts = Counter(stack.statuses().values())
        if counts.get("paid", 0) >= orders:
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"not all paid within {timeout}s: {dict(counts)}")
        time.sleep(2.0)


def log_events(offsets: dict[Path, int]) -> dict[str, int]:
    """The workers' breaker and pace events logged since `offsets` (file -> size then)."""
    found: Counter[str] = Counter()
    for path, offset in offsets.items():
        with path.open("rb") as handle:
            handle.seek(offset)
            for line in handle.read().decode(errors="replace").splitlines():
                for event in EVENTS:
                    if f'"event": "{event}"' in line:
                        found[event] += 1
    return {event: found.get(event, 0) for event in EVENTS}


def cpu_seconds(group: ProcessGroup) -> dict[str, float]:
    """CPU time (user + system) each live process has used so far, by name."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for proc in group.snapshot():
        try:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[proc.name] = (int(fields[11]) + int(fields[12])) / tick
    return out


def utc(naive: datetime) -> float:
    """A naive UTC timestamp column (read with raw SQL) as unix time."""
    return naive.replace(tzinfo=UTC).timestamp()


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def batches(stack: Cluster, back_at: float) -> dict[str, Any]:
    """Each worker's booking batches in the drain, rebuilt from `task_attempts`: a batch's
    performs overlap (16 threads); the next batch starts only after its commit, its health
    report, the next claim and prepare. Sizes, perform spans and the gaps between batches say
    whether the pace (small batches) or the workers themselves (full batches, long gaps) limit."""
    rows = stack.sql(
        "SELECT a.worker, a.started_at, a.finished_at FROM task_attempts a "
        "JOIN tasks t ON t.id = a.task_id WHERE t.kind = 'book' AND a.outcome = 'ok' "
        "ORDER BY a.worker, a.started_at"
    )
    out: dict[str, Any] = {}
    for worker in sorted({r[0] for r in rows}):
        mine = [(utc(r[1]), utc(r[2])) for r in rows if r[0] == worker]
        mine = [(s, f) for s, f in mine if s >= back_at]
        groups: list[list[tuple[float, float]]] = []
        for start, end in mine:
            if groups and start <= max(f for _, f in groups[-1]) + 0.02:
                groups[-1].append((start, end))
            else:
                groups.append([(start, end)])
        spans = [max(f for _, f in g) - min(s for s, _ in g) for g in groups]
        gaps = [min(s for s, _ in b) - max(f for _, f in a) for a, b in pairwise(groups)]
        calls = [f - s for s, f in mine]
        out[worker] = {
            "bookings": len(mine),
            "batches": len(groups),
            "median_batch_size": median([float(len(g)) for g in groups]),
            "median_perform_span_s": median(spans),
            "median_gap_between_batches_s": median(gaps),
            "median_call_s": median(calls),
            "p95_call_s": round(sorted(calls)[int(0.95 * (len(calls) - 1))], 3) if calls else None,
            "perform_share": round(sum(spans) / (sum(spans) + sum(gaps)), 3) if gaps else None,
        }
    return out


def gaps_at_carrier(requests: list[list[Any]], back_at: float, end: float) -> dict[str, Any]:
    """How the booking requests were spaced at the carrier: the longest silences."""
    times = sorted(
        float(t) for t, kind, _ in requests if kind == "POST /v1/shipments" and back_at <= t <= end
    )
    silences = sorted((b - a for a, b in pairwise(times)), reverse=True)
    return {
        "longest_silences_s": [round(g, 2) for g in silences[:5]],
        "seconds_in_silences_over_0.5s": round(sum(g for g in silences if g > 0.5), 1),
    }


def one_rate(
    args: argparse.Namespace, rate: float, directory: Path, database_url: str
) -> dict[str, Any]:
    """Outage, N orders, then the drain at configured `rate`: its figures."""
    knobs = {**KNOBS, "ORDERFLOW_BOBS_POST_RATE_LIMIT": str(rate)}
    group = ProcessGroup(directory)

    def say(line: str) -> None:
        print(f"[{rate:g}/s] {line} (load {load()})", flush=True)

    try:
        with cluster(group, database_url, knobs) as stack:
            stack.start_outside_and_serve(progress_seconds=args.progress_seconds, seed=args.seed)
            stack.carrier_switches(
                rate_limit_per_second=args.carrier_limit,
                webhook_loss_rate=args.webhook_loss,
                progress_seconds=args.progress_seconds,
            )
            for i in range(1, args.workers + 1):
                stack.start_worker(f"w{i}")
            stack.carrier_switches(outage="503")
            down_at = time.time()
            say(f"Bob's Post down (503); placing {args.orders} orders")
            accepted, placing = place_all(stack, args.orders, args.threads, args.seed)
            say(f"accepted {accepted} in {placing:.1f}s; waiting until all are paid")
            wait_all_paid(stack, accepted, timeout=120 + args.orders / 5)
            outage = time.time() - down_at
            offsets = {p.log_path: p.log_path.stat().st_size for p in stack.workers.values()}
            load_before = load()
            cpu_before = cpu_seconds(group)
            stack.carrier_switches(outage=None)
            back_at = time.time()
            say(f"all paid; Bob's Post back after {outage:.0f}s down; draining")
            deps: list[dict[str, Any]] = []
            booked = 0
            deadline = time.monotonic() + 120 + 3 * accepted / rate
            while booked < accepted and time.monotonic() < deadline:
                time.sleep(1.0)
                with suppress(httpx.HTTPError, ClusterError):
                    booked = len(stack.carrier_stats()["bookings_by_reference"])
                with suppress(httpx.HTTPError, ClusterError):
                    deps.append(
                        {"at": round(time.time() - back_at, 1), "data": stack.dependencies()}
                    )
            load_after = load()
            cpu = {
                name: round(used - cpu_before.get(name, 0.0), 1)
                for name, used in cpu_seconds(group).items()
            }
            drained = checks.drain(
                stack.carrier_requests(since=down_at), back_at, rate, args.carrier_limit
            )
            events = log_events(offsets)
            requests = stack.carrier_requests(since=down_at)
            diagnosis = {
                "batches": batches(stack, back_at),
                "carrier": gaps_at_carrier(requests, back_at, back_at + drained.get("seconds", 0)),
                "cpu_seconds_in_drain": cpu,
            }
            say(f"{drained['bookings']} booked in {drained.get('seconds')}s")
            return {
                "configured_rate": rate,
                "carrier_limit": args.carrier_limit,
                "orders": accepted,
                "workers": args.workers,
                "placement_seconds": round(placing, 1),
                "outage_seconds": round(outage, 1),
                "complete": drained["bookings"] >= accepted,
                "drain": drained,
                "worker_events_during_drain": events,
                "diagnosis": diagnosis,
                "load_before": load_before,
                "load_after": load_after,
                "dependencies": deps,
                "carrier_requests": [e for e in requests if float(e[0]) >= back_at - 1],
            }
    finally:
        group.stop_all()


def row(r: dict[str, Any]) -> str:
    d = r["drain"]
    kinds = d.get("requests_by_kind", {})
    ev = r["worker_events_during_drain"]
    return (
        f"| {r['configured_rate']:g} | {r['orders']} | {r['workers']} | {d.get('seconds')} | "
        f"{d.get('bookings_per_second')} | {checks.percent(d.get('fraction'))} | "
        f"{d.get('steady_bookings_per_second')} | {checks.percent(d.get('steady_fraction'))} | "
        f"{d.get('requests_per_second')} | {d.get('rate_limited_429')} | {kinds.get('lookups')} | "
        f"{kinds.get('polls')} | {d.get('first_booking_after_seconds')} | "
        f"{ev['dependency.down']} / {ev['dependency.throttled']} | "
        f"{r['load_before']} → {r['load_after']} |"
    )


HEADER = (
    "| configured rate (req/s) | orders | workers | time to drain (s) | bookings/s | fraction | "
    "middle 80 %: bookings/s | fraction | carrier requests/s | 429s | look-ups | polls | "
    "first booking after (s) | breaker opened / throttled | load avg 1/5/15 before → after |\n"
    "| " + " | ".join(["---"] * 15) + " |"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rates", type=float, nargs="+", default=[40.0])
    parser.add_argument("--carrier-limit", type=int, default=50, help="the simulator's 429 limit")
    parser.add_argument(
        "--webhook-loss",
        type=float,
        default=1.0,
        help="share of webhooks lost (default all: tracking is by polling, see the docstring)",
    )
    parser.add_argument("--progress-seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=8, help="concurrent placements")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", default=None, help="an empty database (one rate only)")
    parser.add_argument("--keep-logs", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.database_url and len(args.rates) > 1:
        parser.error("--database-url takes one rate (each rate needs an empty database)")
    print(f"machine: {machine()}; load {load()}", flush=True)
    results = []
    with ExitStack() as stack:
        base = args.keep_logs or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for rate in args.rates:
            with ExitStack() as db:
                url = args.database_url or db.enter_context(throwaway_postgres())
                results.append(one_rate(args, rate, base / f"rate-{rate:g}", url))
    print(HEADER)
    for r in results:
        print(row(r))
    for r in results:
        print(f"{r['configured_rate']:g}/s: {json.dumps(r['diagnosis'])}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "runs": results}, indent=1))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
