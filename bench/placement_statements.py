"""Count the SQL statements and transactions `POST /api/v1/orders` costs per placed order.

Runs the real app (uvicorn on a free port) on the given database, seeds two products and a
customer, places N orders from C concurrent clients (C > 1 lets group commit batch them), and
prints statements, transactions and statements per order. usage:

    python bench/placement_statements.py --database-url postgresql+psycopg://…/db --orders 500
"""

from __future__ import annotations

import argparse
import collections
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import event

from orderflow.config import Settings
from orderflow.db import Database
from orderflow.migrate import upgrade
from orderflow.serving import BackgroundServer
from orderflow.web.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--orders", type=int, default=500)
    parser.add_argument("--clients", type=int, default=1)
    args = parser.parse_args()
    settings = Settings(_env_file=None, database_url=args.database_url, admin_token="t")
    db = Database(args.database_url)
    upgrade(db.engine)
    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    with BackgroundServer(create_app(settings, db)) as server:
        api = httpx.Client(
            base_url=f"{server.url}/api/v1", headers={"Authorization": "Bearer t"}, timeout=30
        )
        for sku in ("BENCH-A", "BENCH-B"):
            api.post(
                "/products",
                json={
                    "sku": sku,
                    "name": sku,
                    "price": 100,
                    "currency": "GBP",
                    "weight_grams": 1,
                    "stock": 10**9,
                },
            )
        customer = api.post(
            "/customers",
            json={
                "name": "B",
                "email": "b@example.com",
                "payment_method": "pm_ok",
                "address": {"line1": "1 A St", "city": "L", "postcode": "N1", "country": "GB"},
            },
        ).json()["id"]

        @event.listens_for(db.engine, "before_cursor_execute")
        def _count(_c: object, _cur: object, statement: str, *_: object) -> None:
            with lock:
                counts["statements"] += 1
                counts[statement.lstrip().split(None, 1)[0].upper()] += 1

        @event.listens_for(db.engine, "commit")
        def _commit(_c: object) -> None:
            with lock:
                counts["commits"] += 1

        body = {
            "customer_id": customer,
            "lines": [{"sku": "BENCH-A", "quantity": 1}, {"sku": "BENCH-B", "quantity": 2}],
        }

        def post(i: int) -> int:
            return api.post("/orders", json=body).status_code

        with ThreadPoolExecutor(args.clients) as pool:
            statuses = collections.Counter(pool.map(post, range(args.orders)))
        api.close()
    db.dispose()
    placed = statuses.get(202, 0)
    print(
        json.dumps(
            {
                "orders": args.orders,
                "clients": args.clients,
                "statuses": dict(statuses),
                "statements_per_order": round(counts["statements"] / max(1, placed), 2),
                "commits_per_order": round(counts["commits"] / max(1, placed), 3),
                "by_kind": {k: v for k, v in counts.items() if k not in ("statements", "commits")},
            }
        )
    )


if __name__ == "__main__":
    main()
