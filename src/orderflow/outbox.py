"""Domain events written in the same transaction as the change they announce."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, Session, mapped_column

from orderflow import deferred
from orderflow.clock import now
from orderflow.db import Base, BigId, UTCDateTime


class OutboxEvent(Base):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_unpublished", "published_at", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    topic: Mapped[str] = mapped_column(String(64))  # e.g. order.paid
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


def emit(session: Session, topic: str, order_id: int | None, payload: dict[str, Any]) -> None:
    values = {"topic": topic, "order_id": order_id, "payload": payload, "created_at": now()}
    deferred.add(session, OutboxEvent, values)
