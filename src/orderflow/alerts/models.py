"""An incident: one per condition while it lasts, so a long outage is one message, not a flood."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from orderflow.clock import now
from orderflow.db import Base, BigId, UTCDateTime


class Incident(Base):
    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), index=True)  # e.g. dependency_down:bobs_post
    # The key while the incident is open, NULL once resolved: at most one open per key.
    open_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    audience: Mapped[str] = mapped_column(String(16))  # developers | logistics
    title: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    last_notified_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # What was told, oldest first: [{"event", "at", "channel", "task_key", "text"}] (the
    # message itself is the task `task_key`, whose status says whether it went out).
    messages: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
