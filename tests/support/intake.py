"""For the queue-intake tests: a fresh RabbitMQ queue, its depth, a catalog, message bodies."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aio_pika

from orderflow.catalog.service import create_customer, create_product
from orderflow.db import Database
from tests.support.stack import ADDRESS

BROKER = "amqp://guest:guest@127.0.0.1:5672/"


@contextmanager
def fresh_queue(prefix: str = "orderflow-intake-test") -> Iterator[str]:
    """A unique queue name; the queue is deleted afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        asyncio.run(_delete(name))


async def _delete(name: str) -> None:
    async with await aio_pika.connect(BROKER) as connection:
        channel = await connection.channel()
        await channel.queue_delete(name)


def queue_depth(name: str) -> int:
    """Messages ready in the queue (unacked ones count again once their consumer is gone)."""

    async def depth() -> int:
        async with await aio_pika.connect(BROKER) as connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(name, passive=True)
            return int(queue.declaration_result.message_count or 0)

    return asyncio.run(depth())


def arrange_catalog(db: Database, stock: dict[str, int]) -> int:
    """Products with this stock (price 1000 GBP each) and one customer; returns its id."""
    with db.transaction() as session:
        for sku, units in stock.items():
            create_product(
                session,
                sku=sku,
                name=sku,
                price=1000,
                currency="GBP",
                weight_grams=100,
                stock=units,
            )
        return create_customer(
            session,
            name="Ada",
            email="ada@example.com",
            phone=None,
            address=ADDRESS,
            payment_method="pm_ok_visa",
        ).id


def message(key: str | None, customer: int, *lines: tuple[str, int]) -> dict[str, Any]:
    """An intake message body (without `idempotency_key` when `key` is None)."""
    body: dict[str, Any] = {
        "customer_id": customer,
        "lines": [{"sku": s, "quantity": q} for s, q in lines],
    }
    return body if key is None else {"idempotency_key": key, **body}


def close_connection(name: str) -> None:
    """Have RabbitMQ close the connection named `name` (as if the network dropped it)."""
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "--no-table-headers", "pid", "client_properties"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    pids = [line.split("\t")[0] for line in listing.splitlines() if f'"{name}"' in line]
    assert pids, f"no connection named {name}"
    for pid in pids:
        subprocess.run(
            ["rabbitmqctl", "-q", "close_connection", pid, "closed by a test"],
            check=True,
            timeout=60,
            capture_output=True,
        )
