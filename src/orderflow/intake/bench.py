"""Publishing order messages to the intake queue, and waiting until they are placed: what a
producer does (persistent messages, publisher confirms), for benchmarks and tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

import aio_pika
from sqlalchemy import select

from orderflow.db import Database
from orderflow.orders.models import Order

IN_FLIGHT = 500  # publishes awaiting their confirm at once


def publish_orders(url: str, queue: str, bodies: Iterable[dict[str, Any] | bytes]) -> None:
    """Publish each body (a message dict, or raw bytes) persistently; returns once RabbitMQ
    confirmed every one (so they survive a broker restart)."""
    asyncio.run(_publish(url, queue, [b if isinstance(b, bytes) else _encode(b) for b in bodies]))


async def publish_timed(url: str, queue: str, bodies: Sequence[dict[str, Any]]) -> list[float]:
    """`publish_orders`, awaited: each message's seconds from its publish to its confirm."""
    return await _publish_timed(url, queue, [_encode(b) for b in bodies])


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


async def _publish(url: str, queue: str, bodies: Sequence[bytes]) -> None:
    await _publish_timed(url, queue, bodies)


async def _publish_timed(url: str, queue: str, bodies: Sequence[bytes]) -> list[float]:
    latencies: list[float] = []
    async with await aio_pika.connect(url, timeout=10) as connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True)

        async def one(body: bytes) -> None:
            started = time.perf_counter()
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=queue,
            )
            latencies.append(time.perf_counter() - started)

        for start in range(0, len(bodies), IN_FLIGHT):
            await asyncio.gather(*(one(body) for body in bodies[start : start + IN_FLIGHT]))
    return latencies


def placed_keys(db: Database, keys: Iterable[str]) -> set[str]:
    """Which of these idempotency keys have their order."""
    wanted = list(keys)
    found: set[str] = set()
    with db.read() as session:
        for start in range(0, len(wanted), 1000):
            chunk = wanted[start : start + 1000]
            query = select(Order.idempotency_key).where(Order.idempotency_key.in_(chunk))
            found.update(k for k in session.scalars(query) if k is not None)
    return found


def placed_count(db: Database, keys: Sequence[str]) -> int:
    """How many of these idempotency keys have their order."""
    return len(placed_keys(db, keys))


def wait_placed(
    db: Database, keys: Sequence[str], *, timeout: float = 300.0, every: float = 0.2
) -> float:
    """Seconds until every key has its order (raises TimeoutError after `timeout`). Only the
    keys still missing are looked up each time, so that waiting costs the database little.
    Publish first and start timing when the consumer starts, to measure intake alone."""
    start = time.monotonic()
    missing = set(keys)
    while missing:
        missing -= placed_keys(db, missing)
        if not missing:
            break
        if time.monotonic() - start > timeout:
            placed = len(keys) - len(missing)
            raise TimeoutError(f"{placed} of {len(keys)} orders placed after {timeout}s")
        time.sleep(every)
    return time.monotonic() - start
