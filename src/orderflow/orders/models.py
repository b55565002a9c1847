"""Orders and their lines. The order keeps its own copy of where the parcel goes."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from orderflow.clock import now
from orderflow.db import MAX_ID, Base, BigId, UTCDateTime
from orderflow.orders.status import OrderStatus

if TYPE_CHECKING:
    from orderflow.notifications.models import Notification
    from orderflow.payments.models import Payment
    from orderflow.shipping.models import Shipment


def order_reference(order_id: int) -> str:
    return f"ORD-{order_id:06d}"


def parse_order_reference(reference: str | None) -> int | None:
    """The order id a reference names (`ORD-000123` → 123); None if it names none of ours."""
    prefix, _, digits = (reference or "").partition("-")
    if prefix != "ORD" or not (1 <= len(digits) <= 18 and digits.isascii() and digits.isdigit()):
        return None
    return int(digits)


def parse_order_id(text: str) -> int | None:
    """An order id given as `123` or as `ORD-000123` (any case, spaces around); None if no
    order of ours can have it. ASCII digits only: "²".isdigit() is true too."""
    text = text.strip()
    if text.isascii() and text.isdigit():
        order_id = int(text) if len(text) <= 19 else None
    else:
        order_id = parse_order_reference(text.upper())
    return order_id if order_id is not None and 1 <= order_id <= MAX_ID else None


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_status_id", "status", "id"),
        Index("ix_orders_customer_id_id", "customer_id", "id"),
        Index("ix_orders_created_at_id", "created_at", "id"),  # the console's search by date
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    status: Mapped[str] = mapped_column(String(32), default=OrderStatus.PLACED)
    total: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    # Snapshot at placement: name, email, phone, address, payment_method.
    ship_to: Mapped[dict[str, Any]] = mapped_column(JSON)
    payment_method: Mapped[str] = mapped_column(String(200))
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64))
    placed_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    # Head of this order's audit hash chain, moved in the same transaction as each entry.
    audit_seq: Mapped[int] = mapped_column(Integer, default=0)
    audit_head: Mapped[str] = mapped_column(String(64), default="")
    # A re-sent parcel: this order replaces that one (delivery_failed); at most one each.
    replaces: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("orders.id"), index=True, unique=True, default=None
    )

    lines: Mapped[list[OrderLine]] = relationship(
        back_populates="order", order_by="OrderLine.id", lazy="selectin"
    )
    # Read-only views for the worker's batch reads (`queries.preload` loads them for a whole
    # batch at once); writes go through each module's own model.
    shipment: Mapped[Shipment | None] = relationship(viewonly=True, uselist=False)
    payments: Mapped[list[Payment]] = relationship(viewonly=True, order_by="Payment.id")
    notifications: Mapped[list[Notification]] = relationship(viewonly=True)

    @property
    def reference(self) -> str:
        return order_reference(self.id)


class OrderLine(Base):
    __tablename__ = "order_lines"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    sku: Mapped[str] = mapped_column(ForeignKey("products.sku"))
    name: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[int] = mapped_column(Integer)
    weight_grams: Mapped[int] = mapped_column(Integer)

    order: Mapped[Order] = relationship(back_populates="lines")

    @property
    def amount(self) -> int:
        return self.quantity * self.unit_price
