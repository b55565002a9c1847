"""The outbox relay: domain events out to RabbitMQ, at least once, in the order written.

One periodic job for the whole cluster reads a batch of unpublished events, publishes them to
the topic exchange `orderflow.events` (routing key = the event's topic, e.g. `order.paid`)
with publisher confirms, then marks them published. A crash between the two publishes the
batch again: consumers deduplicate by the `event_id` header. Without a broker configured the
events are only marked (the embedded mode has no consumers), and published events are pruned
after a retention, so the table stays small either way.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import aio_pika
from sqlalchemy import Row, Select, delete, select, update

from orderflow.clock import now
from orderflow.db import Database
from orderflow.outbox import OutboxEvent

EXCHANGE = "orderflow.events"
PUBLISHED_FIELDS = (
    OutboxEvent.id,
    OutboxEvent.topic,
    OutboxEvent.order_id,
    OutboxEvent.created_at,
    OutboxEvent.payload,
)


class Relay:
    def __init__(
        self, db: Database, broker_url: str | None, *, batch: int = 500, keep_days: float = 7.0
    ) -> None:
        self.db = db
        self.broker_url = broker_url
        self.batch = batch
        self.keep = timedelta(days=keep_days)

    def run(self) -> int:
        """Publish what is waiting (batch after batch), prune what is old; returns how many."""
        total = 0
        while True:
            if self.broker_url is None:
                marked = self._mark(self._waiting())
            else:
                with self.db.read() as session:  # plain rows: no ORM objects to build
                    events = list(session.execute(self._waiting(*PUBLISHED_FIELDS)))
                if events:
                    asyncio.run(self._publish(events))
                marked = self._mark([e.id for e in events]) if events else 0
            if not marked:
                break
            total += marked
        with self.db.transaction() as session:
            session.execute(delete(OutboxEvent).where(OutboxEvent.published_at < now() - self.keep))
        return total

    def _waiting(self, *columns: Any) -> Select[Any]:
        """The oldest batch of unpublished events (their ids, unless told which columns)."""
        return (
            select(*(columns or (OutboxEvent.id,)))
            .where(OutboxEvent.published_at.is_(None))
            .order_by(OutboxEvent.id)
            .limit(self.batch)
        )

    def _mark(self, ids: Any) -> int:
        """Mark these events published (without a broker: the waiting batch, in one statement)."""
        with self.db.transaction() as session:
            result = session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id.in_(ids))
                .values(published_at=now())
                .execution_options(synchronize_session=False)
            )
        return int(getattr(result, "rowcount", 0) or 0)

    async def _publish(self, events: list[Row[Any]]) -> None:
        assert self.broker_url is not None
        connection = await aio_pika.connect_robust(self.broker_url, timeout=10)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.declare_exchange(
                EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
            )
            for event in events:
                body = {
                    "event_id": event.id,
                    "topic": event.topic,
                    "order_id": event.order_id,
                    "occurred_at": event.created_at.isoformat(),
                    "data": event.payload,
                }
                await exchange.publish(
                    aio_pika.Message(
                        json.dumps(body).encode(),
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=str(event.id),
                        headers={"event_id": event.id},
                    ),
                    routing_key=event.topic,
                )
