"""Backlog samples: how much work waited per step, now and then (the console's backlog chart)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from orderflow.db import Base, BigId, UTCDateTime


class BacklogSample(Base):
    __tablename__ = "backlog_samples"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    step: Mapped[str] = mapped_column(String(32))
    waiting: Mapped[int] = mapped_column(Integer)
