"""Benchmark: an order's timeline with millions of audit entries in the table.

    python bench/audit_timeline.py --entries 10000000 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench_audit
    python bench/audit_timeline.py --entries 10000000 --database-url sqlite:////tmp/bench_audit.db

The database is migrated by the product's migrations (so the append-only triggers are there),
then filled fast (PostgreSQL: INSERT … SELECT generate_series; SQLite: executemany in big
transactions) with `--per-order` entries per order. Then, for random orders, the timeline is
read exactly as the API reads it (`chain.entries_of` → `chain.as_dict` → `timeline.timeline`),
each in its own read transaction. Prints p50, p95, p99 and max in milliseconds. The generated
hashes are placeholders (the chains do not verify): the benchmark measures reading, not
hashing. `--reuse` skips generation when the rows are already there.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text

from orderflow.audit import chain, timeline
from orderflow.audit.models import AuditEntry
from orderflow.db import Database
from orderflow.migrate import upgrade

ACTIONS = [
    ("order.placed", None, None),
    ("payment.succeeded", "placed", "paid"),
    ("shipment.booked", "paid", "scheduled"),
    ("shipment.collected", "scheduled", "shipped"),
    ("email.shipped", None, None),
    ("shipment.delivered", "shipped", "delivered"),
]
DETAILS = json.dumps(
    {"payment_id": "pay_bench", "amount": 2599, "currency": "GBP", "event_id": "evt_bench"}
)


def generate_postgres(db: Database, orders: int, per_order: int) -> None:
    chunk = 100_000
    with db.engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO customers (id, name, email, phone, address, payment_method, "
                "created_at) VALUES (1, 'Bench', 'bench@example.com', NULL, '{}', 'pm', now())"
            )
        )
    actions = "ARRAY[" + ",".join(f"'{a}'" for a, _, _ in ACTIONS) + "]"
    for start in range(1, orders + 1, chunk):
        end = min(orders, start + chunk - 1)
        with db.engine.begin() as c:
            c.execute(
                text(
                    "INSERT INTO orders (id, customer_id, status, total, currency, ship_to, "
                    "payment_method, placed_by, created_at, updated_at, audit_seq, audit_head) "
                    "SELECT g, 1, 'delivered', 2599, 'GBP', '{}', 'pm', 'bench', now(), now(), "
                    ":per, md5(g::text) || md5(g::text) "
                    "FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) g"
                ),
                {"per": per_order, "a": start, "b": end},
            )
            c.execute(
                text(
                    "INSERT INTO audit_entries (order_id, seq, at, actor, action, from_status, "
                    "to_status, details, prev_hash, hash) "
                    "SELECT o, s, (now() at time zone 'utc') - interval '30 days' "
                    f"+ s * interval '1 minute', 'worker:bench', ({actions})[1 + (s - 1) % 6], "
                    f"NULL, NULL, CAST(:details AS json), md5(o::text || '/' || (s - 1)::text) "
                    "|| md5((s - 1)::text), md5(o::text || '/' || s::text) || md5(s::text) "
                    "FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) o, "
                    "generate_series(1, CAST(:per AS int)) s"
                ),
                {"per": per_order, "a": start, "b": end, "details": DETAILS},
            )
        print(f"  {end * per_order:>12,} entries", flush=True)
    with db.engine.begin() as c:
        c.execute(text("SELECT setval('orders_id_seq', :n)"), {"n": orders})
        c.execute(text("ANALYZE orders"))
        c.execute(text("ANALYZE audit_entries"))


def generate_sqlite(path: str, orders: int, per_order: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    conn.execute(
        "INSERT INTO customers (id, name, email, phone, address, payment_method, created_at) "
        "VALUES (1, 'Bench', 'bench@example.com', NULL, '{}', 'pm', '2026-01-01 00:00:00')"
    )
    base = datetime(2026, 1, 1, tzinfo=UTC)
    stamps = [
        (base + timedelta(minutes=s)).strftime("%Y-%m-%d %H:%M:%S.%f") for s in range(per_order + 1)
    ]
    chunk = 50_000
    for start in range(1, orders + 1, chunk):
        end = min(orders, start + chunk - 1)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO orders (id, customer_id, status, total, currency, ship_to, "
            "payment_method, placed_by, created_at, updated_at, audit_seq, audit_head) "
            "VALUES (?, 1, 'delivered', 2599, 'GBP', '{}', 'pm', 'bench', ?, ?, ?, ?)",
            ((o, stamps[0], stamps[0], per_order, f"{o:064x}") for o in range(start, end + 1)),
        )
        conn.executemany(
            "INSERT INTO audit_entries (order_id, seq, at, actor, action, from_status, "
            "to_status, details, prev_hash, hash) "
            "VALUES (?, ?, ?, 'worker:bench', ?, ?, ?, ?, ?, ?)",
            (
                (
                    o,
                    s,
                    stamps[s],
                    *ACTIONS[(s - 1) % 6],
                    DETAILS,
                    f"{o:032x}{s - 1:032x}",
                    f"{o:032x}{s:032x}",
                )
                for o in range(start, end + 1)
                for s in range(1, per_order + 1)
            ),
        )
        conn.execute("COMMIT")
        print(f"  {end * per_order:>12,} entries", flush=True)
    conn.execute("ANALYZE")
    conn.close()


def measure(fn: Callable[[int], object], order_ids: list[int]) -> dict[str, float]:
    for oid in order_ids[:100]:  # warm-up: connections, statement caches
        fn(oid)
    times = []
    for oid in order_ids:
        t0 = time.perf_counter()
        fn(oid)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()

    def pick(q: float) -> float:
        return times[min(len(times) - 1, int(q * len(times)))]

    return {
        "p50": pick(0.50),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "max": times[-1],
        "mean": statistics.fmean(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--per-order", type=int, default=10)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--reuse", action="store_true", help="the rows are already there")
    args = parser.parse_args()

    db = Database(args.database_url, pool_size=2)
    orders = args.entries // args.per_order
    if not args.reuse:
        upgrade(db.engine)
        print(f"generating {orders:,} orders x {args.per_order} entries …", flush=True)
        t0 = time.perf_counter()
        if db.is_sqlite:
            generate_sqlite(args.database_url.removeprefix("sqlite:///"), orders, args.per_order)
        else:
            generate_postgres(db, orders, args.per_order)
        print(f"generated in {time.perf_counter() - t0:.0f} s", flush=True)
    with db.read() as session:
        total = session.scalar(select(func.count()).select_from(AuditEntry)) or 0
        top = session.scalar(select(func.max(AuditEntry.order_id))) or 0
    print(f"{total:,} entries in audit_entries, orders 1..{top:,}")

    rng = random.Random(42)
    sample = [rng.randint(1, top) for _ in range(args.samples + 100)]

    def read_timeline(order_id: int) -> object:
        with db.read() as session:
            entries = [chain.as_dict(e) for e in chain.entries_of(session, order_id)]
        assert len(entries) == args.per_order
        return timeline.timeline(entries, "GBP")

    results = {"timeline": measure(read_timeline, sample)}
    for name, r in results.items():
        print(
            f"{name:>13}: p50 {r['p50']:.2f} ms  p95 {r['p95']:.2f} ms  p99 {r['p99']:.2f} ms  "
            f"max {r['max']:.2f} ms  ({args.samples} random orders)"
        )
    db.dispose()


if __name__ == "__main__":
    main()
