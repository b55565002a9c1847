"""Benchmark: the console's work pages with 1,000,000 orders and 100,000 dead letters.

    python bench/console_work_pages.py \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench_console
    python bench/console_work_pages.py --database-url … --reuse     # the rows are there already

The database is migrated by the product's migrations, then filled with INSERT … SELECT
generate_series: 20,000 customers, `--orders` orders spread over 30 days (all statuses), two
finished tasks per order, `--dead` dead letters in 24 causes over three steps (3 attempts
each), 50,000 tasks still ready, and a 6-entry history for the first 10,000 orders
(placeholder hashes: their verdict is "not verified", which costs the same to compute).
Then each page is requested through the real app (in-process ASGI client, logged in as an
admin: session look-up, queries, template), `--runs` times after one warm-up, and p50 / p95 /
max are printed in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from urllib.parse import quote

from fastapi.testclient import TestClient
from sqlalchemy import text

from orderflow.config import Settings
from orderflow.db import Database
from orderflow.migrate import upgrade
from orderflow.people import service as people
from orderflow.web.app import create_app

FIRST = "ARRAY['Ada','Grace','Alan','Edsger','Barbara','Donald','Frances','John','Radia','Ken']"
LAST = (
    "ARRAY['Lovelace','Hopper','Turing','Dijkstra','Liskov','Knuth','Allen','Backus',"
    "'Perlman','Thompson']"
)
STATUSES = (
    "ARRAY['delivered','delivered','delivered','delivered','delivered','delivered','shipped',"
    "'paid','placed','scheduled','cancelled','payment_failed','delivery_failed','delivered']"
)
SHIP_TO = (
    '{"name": "Bench", "email": "bench@example.com", "phone": null, "address": {"line1": '
    '"1 Main St", "line2": null, "city": "London", "postcode": "N1 1AA", "country": "GB"}}'
)
KINDS = "ARRAY['book','charge','notify']"


def generate(db: Database, orders: int, dead: int) -> None:
    with db.engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO customers (id, name, email, phone, address, payment_method, "
                f"created_at) SELECT g, ({FIRST})[1 + g % 10] || ' ' || ({LAST})[1 + (g / 10) "
                "% 10] || ' ' || g, 'c' || g || '@example.com', NULL, '{}', 'pm_ok_visa', "
                "now() - interval '60 days' FROM generate_series(1, 20000) g"
            )
        )
        c.execute(text("SELECT setval('customers_id_seq', 20000)"))
    chunk = 200_000
    for start in range(1, orders + 1, chunk):
        end = min(orders, start + chunk - 1)
        with db.engine.begin() as c:
            c.execute(
                text(
                    "INSERT INTO orders (id, customer_id, status, total, currency, ship_to, "
                    "payment_method, placed_by, created_at, updated_at, audit_seq, audit_head) "
                    f"SELECT g, 1 + g % 20000, ({STATUSES})[1 + g % 14], 1299 + g % 5000, "
                    "'GBP', CAST(:ship_to AS json), 'pm_ok_visa', 'admin:api', "
                    "now() - interval '30 days' + g * interval '2.5 seconds', now(), 0, '' "
                    "FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) g"
                ),
                {"a": start, "b": end, "ship_to": SHIP_TO},
            )
            c.execute(
                text(
                    "INSERT INTO tasks (key, kind, order_id, payload, status, run_at, attempts, "
                    "created_at, finished_at) SELECT 'bench-done:' || g || ':' || k, k, g, "
                    "'{}', 'done', now(), 1, now() - interval '30 days', now() "
                    "FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) g, "
                    "unnest(ARRAY['charge','book']) k"
                ),
                {"a": start, "b": end},
            )
        print(f"  {end:>10,} orders (and 2 finished tasks each)", flush=True)
    with db.engine.begin() as c:
        c.execute(text("SELECT setval('orders_id_seq', :n)"), {"n": orders})
        step = max(1, orders // dead)
        c.execute(
            text(
                "INSERT INTO tasks (key, kind, order_id, payload, status, run_at, attempts, "
                "error_class, last_error, cause, first_failed_at, last_failed_at, created_at, "
                "finished_at) SELECT 'bench:' || g, k, g * :step, '{}', 'dead', now(), 3, "
                "'permanent', e, k || ' · permanent · ' || e, now() - g * interval '1 second', "
                "now() - g * interval '1 second', now() - interval '31 days', now() "
                f"FROM generate_series(1, :dead) g, LATERAL (SELECT ({KINDS})[1 + g % 3] AS k, "
                "CASE WHEN g % 2 = 0 THEN 'Bob''s Post POST /v1/shipments: HTTP 422: unknown "
                "country ''X' || (g % 7) || '''' ELSE 'HTTP 400: bad postcode for zone ' || "
                "(g % 3) END AS e) x"
            ),
            {"dead": dead, "step": step},
        )
        c.execute(
            text(
                "INSERT INTO task_attempts (task_id, attempt, worker, started_at, finished_at, "
                "outcome, http_status, error) SELECT t.id, a, 'bench', t.last_failed_at, "
                "t.last_failed_at + interval '40 ms', 'permanent', 422, t.last_error "
                "FROM tasks t, generate_series(1, 3) a WHERE t.status = 'dead'"
            )
        )
        c.execute(
            text(
                "INSERT INTO tasks (key, kind, order_id, payload, status, run_at, attempts, "
                "created_at) SELECT 'bench-ready:' || g, 'book', g * 20 - 9, '{}', 'ready', "
                "now() + interval '1 hour', 1, now() FROM generate_series(1, 50000) g"
            )
        )
        actions = (
            "ARRAY['order.placed','payment.succeeded','shipment.booked','shipment.collected',"
            "'email.shipped','shipment.delivered']"
        )
        c.execute(
            text(
                "INSERT INTO audit_entries (order_id, seq, at, actor, action, from_status, "
                "to_status, details, prev_hash, hash) SELECT o, s, now() - interval '30 days' "
                f"+ s * interval '1 minute', 'worker:bench', ({actions})[s], NULL, NULL, "
                "CAST('{}' AS json), md5(o::text || '/' || (s - 1)::text) || md5((s - 1)::text), "
                "md5(o::text || '/' || s::text) || md5(s::text) "
                "FROM generate_series(1, 10000) o, generate_series(1, 6) s"
            )
        )
        c.execute(text("UPDATE orders SET audit_seq = 6 WHERE id <= 10000"))
    with db.engine.connect() as c:
        c.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))


def pages(client: TestClient, orders: int, dead: int) -> dict[str, str]:
    """The pages to time, by what they show."""
    groups = client.get("/console/dead-letters")
    assert groups.status_code == 200, groups.text[:500]
    cause = "book · permanent · Bob's Post POST /v1/shipments: HTTP 422: unknown country 'X4'"
    cause_q = quote(cause, safe="")
    letter = client.get(f"/console/dead-letters?cause={cause_q}").text
    task_id = letter.split('href="/console/dead-letters/', 1)[1].split('"', 1)[0]
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 10 * 86400))
    group = f"/console/dead-letters?cause={cause_q}"
    return {
        "dead letters: groups": "/console/dead-letters",
        "dead letters: a group (first page)": group,
        "dead letters: a group (deep page)": f"{group}&after={dead // 2}",
        "dead letters: one, with evidence": f"/console/dead-letters/{task_id}",
        "dead letters: group redrive dry run": (
            f"/console/dead-letters/groups/redrive?cause={cause_q}"
        ),
        "orders: newest": "/console/orders",
        "orders: deep page": f"/console/orders?before={orders // 3}",
        "orders: by reference": f"/console/orders?q=ORD-{orders // 2:06d}",
        "orders: by customer name": "/console/orders?q=grace+hopper+12311",
        "orders: by part of a name": "/console/orders?q=hopper",
        "orders: by e-mail": "/console/orders?q=c4711%40example.com",
        "orders: by status (rare)": "/console/orders?status=payment_failed",
        "orders: name + status": "/console/orders?q=hopper&status=cancelled",
        "orders: one day": f"/console/orders?from={day}&to={day}",
        "orders: no match": "/console/orders?q=nobody+at+all",
        "order page (with history)": "/console/orders/5000",
        "order page (dead letter)": f"/console/orders/{orders // 100 * 10}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--dead", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()
    db = Database(args.database_url)
    if not args.reuse:
        upgrade(db.engine)
        started = time.monotonic()
        generate(db, args.orders, args.dead)
        print(f"generated in {time.monotonic() - started:.0f} s", flush=True)
    with db.transaction() as session:
        if not people.users_exist(session):
            people.add_user(session, "bench", "admin", "bench password 123", actor="bench")
    settings = Settings(_env_file=None, database_url=args.database_url, admin_token="bench")
    app = create_app(settings, db)
    with TestClient(app, base_url="http://testserver") as client:
        login = client.post(
            "/console/login",
            data={"name": "bench", "password": "bench password 123"},
            headers={"Origin": "http://testserver"},
            follow_redirects=False,
        )
        assert login.status_code == 303, login.text[:300]
        print(f"{'page':<40} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  status")
        for name, path in pages(client, args.orders, args.dead).items():
            client.get(path)  # warm-up
            times, status = [], 0
            for _ in range(args.runs):
                started = time.perf_counter()
                answer = client.get(path)
                times.append((time.perf_counter() - started) * 1000)
                status = answer.status_code
            times.sort()
            p95 = times[max(0, int(len(times) * 0.95) - 1)]
            print(
                f"{name:<40} {statistics.median(times):>8.1f} {p95:>8.1f} {times[-1]:>8.1f}  "
                f"{status}",
                flush=True,
            )
    db.dispose()


if __name__ == "__main__":
    main()
