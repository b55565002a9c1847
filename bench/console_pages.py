"""Benchmark: the console's overview pages with 1,000,000 orders and 100,000 dead letters.

    python bench/console_pages.py \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench_console

The database is migrated by the product's migrations, then filled with INSERT … SELECT
generate_series (PostgreSQL only): `--orders` orders placed over the last two days (most of
them delivered, with their delivery in the audit log and one finished task each), `--dead`
dead letters in a handful of causes, a few thousand tasks waiting, two days of backlog samples
and a few outages of Bob's Post; VACUUM ANALYZE. Then the console is served (uvicorn, in this
process) and each page is read `--requests` times by a logged-in user over HTTP, one after
another (`--pause` seconds apart); prints p50, p95, p99 and max in milliseconds per page.
`--counts-seconds 0` makes the home page count everything for every request (no reuse of
counts made less than ORDERFLOW_CONSOLE_COUNTS_SECONDS ago). `--reuse` skips generation.
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx
from sqlalchemy import func, select, text

from orderflow.config import Settings
from orderflow.db import Database
from orderflow.migrate import upgrade
from orderflow.orders.models import Order
from orderflow.people import service as people
from orderflow.people.models import User
from orderflow.serving import BackgroundServer
from orderflow.web.app import create_app

PAGES = [
    "/console",
    "/console?span=day",
    "/console/dependencies",
    "/console/incidents",
    "/console/banner",
]
PASSWORD = "bench password 1"
TWO_DAYS = 2 * 86400


def _run(db: Database, statement: str, **params: object) -> None:
    with db.engine.begin() as c:
        c.execute(text(statement), params)


def generate(db: Database, orders: int, dead: int) -> None:
    _run(
        db,
        "INSERT INTO customers (id, name, email, phone, address, payment_method, created_at) "
        "VALUES (1, 'Bench', 'bench@example.com', NULL, '{}', 'pm', now())",
    )
    at = "(now() at time zone 'utc') - (g % :span) * interval '1 second'"
    status = (
        "CASE WHEN g % 100 < 90 THEN 'delivered' WHEN g % 100 < 94 THEN 'shipped' "
        "WHEN g % 100 < 96 THEN 'paid' WHEN g % 100 < 98 THEN 'cancelled' "
        "ELSE 'payment_failed' END"
    )
    chunk = 200_000
    for start in range(1, orders + 1, chunk):
        end = min(orders, start + chunk - 1)
        rows = {"a": start, "b": end, "span": TWO_DAYS}
        series = "FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) g"
        _run(
            db,
            "INSERT INTO orders (id, customer_id, status, total, currency, ship_to, "
            "payment_method, placed_by, created_at, updated_at, audit_seq, audit_head) "
            f"SELECT g, 1, {status}, 2599, 'GBP', '{{}}', 'pm', 'bench', {at}, {at}, 1, "
            f"md5(g::text) || md5(g::text) {series}",
            **rows,
        )
        _run(
            db,
            "INSERT INTO audit_entries (order_id, seq, at, actor, action, from_status, "
            "to_status, details, prev_hash, hash) "
            f"SELECT g, 1, {at}, 'carrier', 'shipment.delivered', "
            "'shipped', 'delivered', '{}', md5(g::text) || md5(g::text), "
            f"md5(g::text) || md5(g::text) {series} WHERE g % 100 < 90",
            **rows,
        )
        _run(
            db,
            "INSERT INTO tasks (key, kind, order_id, payload, status, run_at, attempts, "
            "created_at, finished_at) "
            f"SELECT 'ORD-' || g || '\\:charge', 'charge', g, '{{}}', 'done', {at}, 1, {at}, "
            f"{at} {series}",
            **rows,
        )
    causes = [
        ("book", "permanent", "Bob's Post POST /v1/shipments: HTTP 422: unknown country"),
        ("book", "permanent", "Bob's Post POST /v1/shipments: HTTP 422: postcode invalid"),
        ("charge", "exhausted", "Paydesk POST /v1/payments: HTTP 503: service unavailable"),
        ("notify", "permanent", "SMTP 550 mailbox unavailable"),
        ("track", "poison", "Bob's Post GET /v1/shipments: unexpected status 'teleported'"),
    ]
    for n, (kind, error_class, error) in enumerate(causes):
        _run(
            db,
            "INSERT INTO tasks (key, kind, order_id, payload, status, run_at, attempts, "
            "error_class, last_error, first_failed_at, last_failed_at, created_at, finished_at) "
            "SELECT 'dead-' || :n || '-' || g, :kind, 1 + (g * 7919) % :orders, '{}', 'dead', "
            "now(), 5, :class, :error, now(), now() - g * interval '1 second', now(), now() "
            "FROM generate_series(1, CAST(:count AS bigint)) g",
            n=n,
            kind=kind,
            orders=orders,
            error=error,
            count=dead // len(causes),
            **{"class": error_class},
        )
    _run(
        db,
        "INSERT INTO tasks (key, kind, order_id, payload, status, run_at, attempts, created_at) "
        "SELECT 'waiting-' || g, CASE WHEN g % 2 = 0 THEN 'book' ELSE 'notify' END, g, '{}', "
        "'ready', (now() at time zone 'utc') - g * interval '1 second', 0, "
        "(now() at time zone 'utc') - g * interval '1 second' FROM generate_series(1, 5000) g",
    )
    _run(
        db,
        "INSERT INTO backlog_samples (at, step, waiting) "
        "SELECT (now() at time zone 'utc') - m * interval '1 minute', s, (m * 37) % 500 "
        "FROM generate_series(0, 2 * 24 * 60) m, unnest(ARRAY['book', 'charge', 'notify']) s",
    )
    _run(
        db,
        "INSERT INTO dependencies (name, state, consecutive_failures, state_since, rate_factor) "
        "VALUES ('bobs_post', 'open', 5, now() at time zone 'utc', 1.0), "
        "('paydesk', 'closed', 0, now() at time zone 'utc', 1.0)",
    )
    _run(
        db,
        "INSERT INTO dependency_changes (name, state, at, error) "
        "SELECT 'bobs_post', CASE WHEN h % 2 = 0 THEN 'open' ELSE 'closed' END, "
        "(now() at time zone 'utc') - h * interval '37 minutes', 'HTTP 503' "
        "FROM generate_series(1, 60) h",
    )
    with db.engine.connect() as c:
        c.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))


def measure(url: str, path: str, requests: int, client: httpx.Client, pause: float) -> list[float]:
    for _ in range(5):  # warm-up
        client.get(f"{url}{path}")
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.get(f"{url}{path}")
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(pause)
        if answer.status_code != 200:
            raise SystemExit(f"{path}: HTTP {answer.status_code}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--dead", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument(
        "--counts-seconds",
        type=float,
        default=5.0,
        help="ORDERFLOW_CONSOLE_COUNTS_SECONDS (0: the home page counts for every request)",
    )
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between requests")
    args = parser.parse_args()
    db = Database(args.database_url)
    upgrade(db.engine)
    if not args.reuse:
        started = time.monotonic()
        generate(db, args.orders, args.dead)
        print(f"generated in {time.monotonic() - started:.0f} s")
    with db.read() as session:
        print(f"orders: {session.scalar(select(func.count()).select_from(Order)):,}")
        if session.scalar(select(User.id).where(User.name == "bench")) is None:
            with db.transaction() as writing:
                people.add_user(writing, "bench", "viewer", PASSWORD, actor="bench")
    settings = Settings(
        _env_file=None, database_url=args.database_url, console_counts_seconds=args.counts_seconds
    )
    server = BackgroundServer(create_app(settings, db)).start()
    try:
        with httpx.Client(timeout=30) as client:
            login = client.post(
                f"{server.url}/console/login",
                data={"name": "bench", "password": PASSWORD},
                headers={"Origin": server.url},
            )
            assert login.status_code == 303, login.text
            print(
                f"{'page':28} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}  (ms, "
                f"n={args.requests}, counts kept {args.counts_seconds} s, pause {args.pause} s)"
            )
            for path in PAGES:
                times = sorted(measure(server.url, path, args.requests, client, args.pause))
                q = statistics.quantiles(times, n=100, method="inclusive")
                print(f"{path:28} {q[49]:8.1f} {q[94]:8.1f} {q[98]:8.1f} {times[-1]:8.1f}")
    finally:
        server.stop()
        db.dispose()


if __name__ == "__main__":
    main()
