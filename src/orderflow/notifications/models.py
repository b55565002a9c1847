"""One row per order and milestone: the e-mail that must go out exactly once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from orderflow.clock import now
from orderflow.db import Base, BigId, UTCDateTime


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (UniqueConstraint("order_id", "kind"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # shipped | payment_failed | cancelled
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    message_id: Mapped[str] = mapped_column(String(300))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
