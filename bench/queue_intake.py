"""Queue intake throughput: N order messages already waiting in RabbitMQ, one `orderflow intake`.

Creates a throwaway PostgreSQL database (migrated by the product), two products and a customer,
publishes N persistent messages (with publisher confirms) to a fresh queue, then starts
`orderflow intake` and waits until every order is committed. Prints the orders/s from the first
commit to the last (the orders' own timestamps), the intake process's CPU per order, and the
load average. The burst target (30,000 orders accepted at >= 3,000/s) is judged on this figure.

usage: python bench/queue_intake.py [--orders 30000] [--broker amqp://guest:guest@127.0.0.1/]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import func, select

from orderflow.catalog.service import create_customer, create_product
from orderflow.chaos.run import throwaway_postgres
from orderflow.db import Database
from orderflow.intake.bench import publish_orders
from orderflow.migrate import upgrade
from orderflow.orders.models import Order

ADDRESS = {"line1": "1 Acacia Avenue", "city": "London", "postcode": "SW1Y 4JH", "country": "GB"}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=30_000)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/")
    args = parser.parse_args()
    queue = f"orderflow-bench-{uuid.uuid4().hex[:8]}"
    with throwaway_postgres() as url:
        db = Database(url)
        upgrade(db.engine)
        with db.transaction() as session:
            for sku in ("BENCH-A", "BENCH-B"):
                create_product(
                    session, sku=sku, name=sku, price=1000, currency="GBP", weight_grams=100,
                    stock=args.orders * 10,
                )  # fmt: skip
            customer = create_customer(
                session, name="Ada", email="ada@example.com", phone=None, address=ADDRESS,
                payment_method="pm_ok_visa",
            ).id  # fmt: skip
        bodies = [
            {
                "idempotency_key": f"q-{i}",
                "customer_id": customer,
                "lines": [{"sku": "BENCH-A" if i % 2 else "BENCH-B", "quantity": 1}],
            }
            for i in range(args.orders)
        ]
        started = time.monotonic()
        publish_orders(args.broker, queue, bodies)
        published = time.monotonic() - started
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")},
            "ORDERFLOW_DATABASE_URL": url,
            "ORDERFLOW_INTAKE_URL": args.broker,
            "ORDERFLOW_INTAKE_QUEUE": queue,
        }
        load_before = os.getloadavg()
        proc = subprocess.Popen(
            [sys.executable, "-m", "orderflow", "intake"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            count = 0
            deadline = time.monotonic() + 600
            while count < args.orders and time.monotonic() < deadline:
                time.sleep(0.2)
                with db.read() as session:
                    count = int(session.scalar(select(func.count()).select_from(Order)) or 0)
            cpu = cpu_seconds(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        with db.read() as session:
            first, last = session.execute(
                select(func.min(Order.created_at), func.max(Order.created_at))
            ).one()
        db.dispose()
    span = (last - first).total_seconds() if first and last else 0.0
    print(
        json.dumps(
            {
                "orders": args.orders,
                "placed": count,
                "published_per_s": round(args.orders / published, 1),
                "placed_per_s": round(count / span, 1) if span else None,
                "span_s": round(span, 2),
                "intake_cpu_ms_per_order": round(cpu * 1000 / max(1, count), 3),
                "load_before": [round(x, 2) for x in load_before],
                "load_after": [round(x, 2) for x in os.getloadavg()],
            }
        )
    )


if __name__ == "__main__":
    main()
