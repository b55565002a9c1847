"""Domain events reach RabbitMQ: every milestone of an order, once each, in order."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import aio_pika
import pytest
from sqlalchemy import func, select

from orderflow.db import Database
from orderflow.outbox import OutboxEvent
from orderflow.relay import EXCHANGE, Relay
from tests.support.stack import Stack, start_stack

BROKER = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture
def queue_name() -> Iterator[str]:
    """A fresh queue bound to every order event; deleted afterwards."""
    name = f"orderflow-test-{uuid.uuid4().hex[:8]}"

    async def declare() -> None:
        async with await aio_pika.connect_robust(BROKER) as connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(name, auto_delete=False)
            await queue.bind(exchange, routing_key="order.#")

    async def remove() -> None:
        async with await aio_pika.connect_robust(BROKER) as connection:
            channel = await connection.channel()
            await channel.queue_delete(name)

    asyncio.run(declare())
    yield name
    asyncio.run(remove())


def _drain(name: str) -> list[dict[str, object]]:
    async def drain() -> list[dict[str, object]]:
        messages = []
        async with await aio_pika.connect_robust(BROKER) as connection:
            channel = await connection.channel()
            queue = await channel.get_queue(name)
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                messages.append(json.loads(message.body))
        return messages

    return asyncio.run(drain())


@pytest.fixture
def relay_stack(database_url: str) -> Iterator[Stack]:
    with start_stack(database_url, broker_url=BROKER, outbox_relay_seconds=0.1) as s:
        yield s


def test_every_milestone_is_published_once_in_order(relay_stack: Stack, queue_name: str) -> None:
    """placed → paid → scheduled → shipped → delivered arrive on RabbitMQ, nothing twice."""
    stack = relay_stack
    stack.product("WIDGET", stock=5)
    order = stack.place(stack.customer(), [("WIDGET", 1)])
    stack.work_until_status(order["id"], "delivered")

    def relayed() -> bool:
        with stack.db.read() as session:
            return not session.scalar(
                select(func.count())
                .select_from(OutboxEvent)
                .where(OutboxEvent.published_at.is_(None))
            )

    stack.work_until(relayed)
    events = [e for e in _drain(queue_name) if e["order_id"] == order["id"]]
    assert [e["topic"] for e in events] == [
        "order.placed",
        "order.paid",
        "order.scheduled",
        "order.shipped",
        "order.delivered",
    ]
    assert len({e["event_id"] for e in events}) == len(events)


def test_without_a_broker_events_are_marked_in_batches_and_pruned_later(db: Database) -> None:
    """No broker (the embedded mode): every waiting event is marked published, batch after
    batch, in statements that load no events; published ones go once past their retention."""
    with db.transaction() as session:
        for i in range(7):
            session.add(OutboxEvent(topic="order.paid", order_id=None, payload={"i": i}))
    assert Relay(db, None, batch=3).run() == 7
    with db.read() as session:
        waiting = select(func.count()).where(OutboxEvent.published_at.is_(None))
        assert session.scalar(waiting) == 0
        assert session.scalar(select(func.count()).select_from(OutboxEvent)) == 7
    assert Relay(db, None, batch=3).run() == 0  # nothing waits: nothing marked twice
    Relay(db, None, keep_days=-1).run()  # retention over: pruned
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(OutboxEvent)) == 0
