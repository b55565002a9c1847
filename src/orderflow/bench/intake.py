"""`orderflow bench intake`: how fast a running deployment accepts orders, and how it refuses.

C clients send N orders as fast as they are answered (closed loop), each order with its own
Idempotency-Key; what is measured is accepted orders per second of wall time, the latency of
each request (a POST of one order, or of one batch) and every refusal by status. Each way in
is a `Via` in `VIAS`: a coroutine that sends its share of the orders through one client and
records what happened. A new way in is one more entry in `VIAS`.

The queue (`--via queue`) is measured apart (`run_queue`): the orders are published to the
intake queue as a producer would (persistent, confirmed), and "accepted" means placed by the
deployment's `orderflow intake`, seen through the API; its latency is the broker's confirm.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from orderflow.bench.http import Connection
from orderflow.intake.bench import publish_timed


@dataclass
class Target:
    url: str  # the deployment's root, e.g. http://127.0.0.1:8000
    token: str

    def connection(self) -> Connection:
        return Connection(
            f"{self.url.rstrip('/')}/api/v1", {"Authorization": f"Bearer {self.token}"}
        )


@dataclass
class Tally:
    """What the clients observed; `done` counts orders answered (accepted or refused)."""

    latencies: list[float] = field(default_factory=list)  # seconds per request
    accepted: int = 0
    done: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def refused(self, what: str, orders: int = 1) -> None:
        self.errors[what] += orders
        self.done += orders


# A via sends the orders it takes from the shared iterator through one client connection.
Via = Callable[[Target, Iterator[dict[str, Any]], Tally, int], Awaitable[None]]


async def via_post(
    target: Target, orders: Iterator[dict[str, Any]], tally: Tally, _batch_size: int
) -> None:
    """One `POST /orders` per order, its key in the Idempotency-Key header."""
    conn = target.connection()
    try:
        for order in orders:
            key = order.pop("idempotency_key")
            started = time.perf_counter()
            try:
                status, _ = await conn.request(
                    "POST", "/orders", json.dumps(order).encode(), {"Idempotency-Key": key}
                )
            except (OSError, asyncio.IncompleteReadError) as exc:
                tally.refused(type(exc).__name__)
                continue
            tally.latencies.append(time.perf_counter() - started)
            if status == 202:
                tally.accepted += 1
                tally.done += 1
            else:
                tally.refused(str(status))
    finally:
        conn.close()


async def via_batch(
    target: Target, orders: Iterator[dict[str, Any]], tally: Tally, batch_size: int
) -> None:
    """`POST /orders/batch` with up to `batch_size` orders each."""
    conn = target.connection()
    try:
        while batch := [o for _, o in zip(range(batch_size), orders, strict=False)]:
            started = time.perf_counter()
            body = json.dumps({"orders": batch}).encode()
            try:
                status, answer = await conn.request("POST", "/orders/batch", body)
            except (OSError, asyncio.IncompleteReadError) as exc:
                tally.refused(type(exc).__name__, len(batch))
                continue
            tally.latencies.append(time.perf_counter() - started)
            if status != 200:
                tally.refused(f"batch {status}", len(batch))
                continue
            for result in json.loads(answer)["results"]:
                if result["status"] == 202:
                    tally.accepted += 1
                    tally.done += 1
                else:
                    tally.refused(str(result["status"]))
    finally:
        conn.close()


VIAS: dict[str, Via] = {"post": via_post, "batch": via_batch}
QUEUE = "queue"  # `run_queue`: not a client of the API


async def run_queue(
    target: Target,
    orders: int,
    broker: str,
    queue: str,
    *,
    skus: int = 2,
    timeout: float = 600.0,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Publish ORDERS messages to `queue` (persistent, with publisher confirms, up to
    `IN_FLIGHT` awaiting their confirm at once), then count this run's orders through the API
    (`GET /orders?customer_id=…`, newest first, only the new ones each time) until all are
    placed or `timeout` passes; those never placed are reported as refused (see the dead
    letters: the intake parks every message it cannot place there)."""
    run_id = uuid.uuid4().hex[:8]
    customer, names = await prepare(target, skus, run_id)
    bodies = order_bodies(orders, customer, names, run_id)
    load_before = os.getloadavg()
    started = time.perf_counter()
    latencies = await publish_timed(broker, queue, bodies)
    placed, newest = 0, 0
    conn = target.connection()
    try:
        while placed < orders and time.perf_counter() - started < timeout:
            found, newest = await _new_orders(conn, customer, newest)
            placed += found
            if progress is not None:
                progress(placed)
            if placed < orders:
                await asyncio.sleep(0.25)
    finally:
        conn.close()
    seconds = time.perf_counter() - started
    return Report(
        via=QUEUE,
        orders=orders,
        clients=1,
        seconds=seconds,
        accepted=placed,
        latencies_ms=_percentiles(latencies),
        errors={"not placed (see the dead letters)": orders - placed} if placed < orders else {},
        load_before=_rounded(load_before),
        load_after=_rounded(os.getloadavg()),
    )


async def _new_orders(conn: Connection, customer: int, newest: int) -> tuple[int, int]:
    """How many of the customer's orders have an id above `newest`, and the highest id now."""
    found, top, before = 0, newest, None
    while True:
        query = f"/orders?customer_id={customer}&limit=500"
        status, body = await conn.request("GET", query + (f"&before={before}" if before else ""))
        if status != 200:
            raise RuntimeError(f"listing the orders: {status} {body[:200]!r}")
        page = json.loads(body)
        ids = [int(o["id"]) for o in page["data"]]
        fresh = [i for i in ids if i > newest]
        found += len(fresh)
        top = max([top, *ids])
        before = page.get("next_before")
        if len(fresh) < len(ids) or before is None:
            return found, top


@dataclass(frozen=True)
class Report:
    via: str
    orders: int
    clients: int
    seconds: float
    accepted: int
    latencies_ms: dict[str, float]
    errors: dict[str, int]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]

    @property
    def accepted_per_second(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "via": self.via,
            "orders": self.orders,
            "clients": self.clients,
            "seconds": round(self.seconds, 2),
            "accepted": self.accepted,
            "accepted_per_s": round(self.accepted_per_second, 1),
            **{f"{k}_ms": v for k, v in self.latencies_ms.items()},
            "errors": self.errors,
            "load_before": self.load_before,
            "load_after": self.load_after,
        }

    def table(self) -> str:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items())) or "none"
        rows = [
            ("via", self.via),
            ("orders sent / clients", f"{self.orders} / {self.clients}"),
            ("accepted", f"{self.accepted} in {self.seconds:.2f} s"),
            ("accepted/s", f"{self.accepted_per_second:.1f}"),
            *((f"{k} latency per request", f"{v:.1f} ms") for k, v in self.latencies_ms.items()),
            ("refused or failed, by status", errors),
            ("load average before / after", f"{self.load_before} / {self.load_after}"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def order_bodies(count: int, customer_id: int, skus: list[str], run: str) -> list[dict[str, Any]]:
    """Two lines per order (quantities 1 and 2) over the given SKUs, each with its own key."""
    rng = random.Random(run)
    bodies = []
    for i in range(count):
        pair = rng.sample(skus, 2) if len(skus) > 1 else skus
        lines = [{"sku": s, "quantity": q} for s, q in zip(pair, (1, 2), strict=False)]
        bodies.append(
            {"idempotency_key": f"bench-{run}-{i}", "customer_id": customer_id, "lines": lines}
        )
    return bodies


async def prepare(target: Target, skus: int, run: str) -> tuple[int, list[str]]:
    """A customer and `skus` products with plenty of stock, created through the API."""
    conn = target.connection()
    try:
        names = [f"BENCH-{run}-{i}" for i in range(1, skus + 1)]
        for sku in names:
            product = {
                "sku": sku,
                "name": sku,
                "price": 1299,
                "currency": "GBP",
                "weight_grams": 300,
                "stock": 1_000_000_000,
            }
            status, body = await conn.request("POST", "/products", json.dumps(product).encode())
            if status != 201:
                raise RuntimeError(f"creating product {sku}: {status} {body[:200]!r}")
        customer = {
            "name": "Bench Customer",
            "email": f"bench-{run}@example.com",
            "payment_method": "pm_ok_bench",
            "address": {
                "line1": "1 Bench St",
                "city": "London",
                "postcode": "SW1Y 4JH",
                "country": "GB",
            },
        }
        status, body = await conn.request("POST", "/customers", json.dumps(customer).encode())
        if status != 201:
            raise RuntimeError(f"creating the customer: {status} {body[:200]!r}")
        return int(json.loads(body)["id"]), names
    finally:
        conn.close()


async def run(
    target: Target,
    via: str,
    orders: int,
    clients: int,
    *,
    batch_size: int = 100,
    skus: int = 2,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Prepare, send, and report; `progress(n)` is told how many orders were answered so far."""
    run_id = uuid.uuid4().hex[:8]
    customer, names = await prepare(target, skus, run_id)
    bodies = iter(order_bodies(orders, customer, names, run_id))
    tally = Tally()
    load_before = os.getloadavg()
    started = time.perf_counter()
    sender = asyncio.gather(*(VIAS[via](target, bodies, tally, batch_size) for _ in range(clients)))
    while not sender.done():
        await asyncio.wait([sender], timeout=0.25)
        if progress is not None:
            progress(tally.done)
    await sender
    seconds = time.perf_counter() - started
    return Report(
        via=via,
        orders=orders,
        clients=clients,
        seconds=seconds,
        accepted=tally.accepted,
        latencies_ms=_percentiles(tally.latencies),
        errors=dict(tally.errors),
        load_before=_rounded(load_before),
        load_after=_rounded(os.getloadavg()),
    )


def _percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {}
    ordered = sorted(latencies)

    def at(p: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(1000 * ordered[-1], 1)}


def _rounded(load: tuple[float, float, float]) -> tuple[float, float, float]:
    return (round(load[0], 2), round(load[1], 2), round(load[2], 2))
