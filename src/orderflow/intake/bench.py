"""Publishing order messages to the intake queue, and waiting until they are placed: what a
producer does (persistent messages, publisher confirms), for benchmarks and tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

import aio_pika
from sqlalchemy import func, select

from orderflow.db import Database
from orderflow.orders.models import Order

IN_FLIGHT = 500  # publishes awaiting their confirm at once


def publish_orders(url: str, queue: str, bodies: Iterable[dict[str, Any] | bytes]) -> None:
    """Publish each body (a message dict, or raw bytes) persistently; returns once RabbitMQ
    confirmed every one (so they survive a broker restart)."""
    asyncio.run(_publish(url, queue, [b if isinstance(b, bytes) else _encode(b) for b in bodies]))


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


async def _publish(url: str, queue: str, bodies: Sequence[bytes]) -> None:
    async with await aio_pika.connect(url, timeout=10) as connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True)
        for start in range(0, len(bodies), IN_FLIGHT):
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(
                            body,
                            content_type="application/json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=queue,
                    )
                    for body in bodies[start : start + IN_FLIGHT]
                )
            )


def placed_count(db: Database, keys: Sequence[str]) -> int:
    """How many of these idempotency keys have their order."""
    found = 0
    with db.read() as session:
        for start in range(0, len(keys), 1000):
            chunk = list(keys[start : start + 1000])
            query = select(func.count()).select_from(Order)
            found += int(session.scalar(query.where(Order.idempotency_key.in_(chunk))) or 0)
    return found


def wait_placed(db: Database, keys: Sequence[str], *, timeout: float = 300.0) -> float:
    """Seconds until every key has its order (raises TimeoutError after `timeout`)."""
    start = time.monotonic()
    while (placed := placed_count(db, keys)) < len(keys):
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{placed} of {len(keys)} orders placed after {timeout}s")
        time.sleep(0.1)
    return time.monotonic() - start
