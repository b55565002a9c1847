"""The booking with the carrier, and every status observation the carrier gave us."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from orderflow.clock import now
from orderflow.db import Base, BigId, UTCDateTime


class Shipment(Base):
    __tablename__ = "shipments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), unique=True)
    carrier: Mapped[str] = mapped_column(String(32))
    carrier_shipment_id: Mapped[str] = mapped_column(String(100), unique=True)
    tracking_number: Mapped[str | None] = mapped_column(String(100))
    # The furthest status observed, in the carrier's words and in ours.
    carrier_status: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    booked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    last_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class CarrierEvent(Base):
    """One status observation (webhook or poll), kept whatever we made of it."""

    __tablename__ = "carrier_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    carrier: Mapped[str] = mapped_column(String(32))
    # The carrier's event id for webhooks; for polled observations one we derive, so that
    # the same observation seen twice is stored once.
    event_id: Mapped[str] = mapped_column(String(200), unique=True)
    carrier_shipment_id: Mapped[str] = mapped_column(String(100), index=True)
    reference: Mapped[str | None] = mapped_column(String(64))
    carrier_status: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    source: Mapped[str] = mapped_column(String(16))  # webhook | poll
    # applied | stale (not forward) | unknown_status | unmatched (no booking known yet)
    outcome: Mapped[str] = mapped_column(String(32))
