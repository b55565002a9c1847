"""One row per outside dependency: its breaker state and its shared rate-limit schedule."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from orderflow.db import Base, BigId, UTCDateTime


class Dependency(Base):
    __tablename__ = "dependencies"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)  # paydesk, bobs_post, smtp
    state: Mapped[str] = mapped_column(String(16), default="closed")  # closed | open
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    state_since: Mapped[datetime] = mapped_column(UTCDateTime)
    next_probe_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Rate limit (GCRA): the theoretical time at which the next request is due. Claims move
    # it forward by one interval per task; a 429 with Retry-After pushes it out for everyone.
    paced_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Adaptive pacing: the share of the configured rate in use; halved on each 429,
    # recovering by a tenth per second of unthrottled success.
    rate_factor: Mapped[float] = mapped_column(Float, default=1.0)
    rate_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DependencyChange(Base):
    """A dependency's breaker opening or closing: its history, shown in the console."""

    __tablename__ = "dependency_changes"
    __table_args__ = (Index("ix_dependency_changes_name_at", "name", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))  # the state entered: closed | open
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    error: Mapped[str | None] = mapped_column(Text)  # the error that opened it
