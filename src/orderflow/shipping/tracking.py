"""Apply what the carrier tells us (webhook or poll) to the shipment and the order.

Observations are stored once each (by event id), applied only if they move the shipment
forward, and turned into order moves through the carrier-neutral vocabulary. The order becomes
`delivered` only once its "shipped" e-mail is out, so `delivered` always implies both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from orderflow.alerts import rules as alerts
from orderflow.audit import chain
from orderflow.clock import now
from orderflow.db import insert_ignore
from orderflow.notifications.models import Notification
from orderflow.observability.metrics import PLACED_TO_SHIPPED
from orderflow.orders import service, workflow
from orderflow.orders.models import Order, parse_order_reference
from orderflow.orders.status import OrderStatus
from orderflow.shipping.models import CarrierEvent, Shipment
from orderflow.shipping.vocabulary import (
    FINAL,
    ORDER_STATUS,
    ShipmentStatus,
    moves_forward,
    translate,
)
from orderflow.tasks import queue


def observe(
    session: Session,
    *,
    carrier: str,
    event_id: str,
    carrier_shipment_id: str,
    reference: str | None,
    carrier_status: str,
    occurred_at: datetime,
    source: str,
    actor: str,
    next_poll_at: datetime,
) -> str:
    """Store one observation and apply it; returns what became of it."""
    # Lock the order the event names before anything else. A booking being committed for it
    # holds the same lock, so this event either waits for the booking and finds its shipment,
    # or commits first and is seen by the booking's replay of unmatched events (which reads
    # after taking the lock): neither transaction can miss the other.
    named = parse_order_reference(reference)
    if named is not None:
        chain.lock_heads(session, [named])
    stored = insert_ignore(
        session,
        CarrierEvent,
        {
            "carrier": carrier,
            "event_id": event_id,
            "carrier_shipment_id": carrier_shipment_id,
            "reference": reference,
            "carrier_status": carrier_status,
            "occurred_at": occurred_at,
            "received_at": now(),
            "source": source,
            "outcome": "pending",
        },
        "event_id",
    )
    if not stored:
        return "duplicate"
    order_id = session.scalar(
        select(Shipment.order_id).where(Shipment.carrier_shipment_id == carrier_shipment_id)
    )
    shipment = None
    if order_id is not None:
        service.lock(session, order_id)  # then read the shipment as it is now
        shipment = session.scalar(
            select(Shipment)
            .where(Shipment.order_id == order_id)
            .execution_options(populate_existing=True)
        )
    if shipment is None:
        outcome = "unmatched"  # booked, but our booking step has not committed yet: kept
    else:
        outcome = apply(
            session,
            shipment,
            carrier_status,
            actor=actor,
            next_poll_at=next_poll_at,
            details={
                "event_id": event_id,
                "source": source,
                "occurred_at": occurred_at.isoformat(),
            },
        )
    session.execute(
        update(CarrierEvent).where(CarrierEvent.event_id == event_id).values(outcome=outcome)
    )
    return outcome


def replay_unmatched(
    session: Session, shipment: Shipment, *, actor: str, next_poll_at: datetime
) -> None:
    """Apply observations that arrived before the booking was recorded."""
    events = session.scalars(
        select(CarrierEvent)
        .where(
            CarrierEvent.carrier_shipment_id == shipment.carrier_shipment_id,
            CarrierEvent.outcome == "unmatched",
        )
        .order_by(CarrierEvent.occurred_at, CarrierEvent.id)
    ).all()
    for event in events:
        event.outcome = apply(
            session,
            shipment,
            event.carrier_status,
            actor=actor,
            next_poll_at=next_poll_at,
            details={
                "event_id": event.event_id,
                "source": event.source,
                "occurred_at": event.occurred_at.isoformat(),
            },
        )


def apply(
    session: Session,
    shipment: Shipment,
    carrier_status: str,
    *,
    actor: str,
    next_poll_at: datetime,
    details: dict[str, Any],
) -> str:
    new = translate(shipment.carrier, carrier_status)
    details = {"carrier_status": carrier_status, **details}
    if new is None:
        chain.record(
            session,
            shipment.order_id,
            actor=actor,
            action="shipment.unknown_status",
            details=details,
        )
        return "unknown_status"
    if not moves_forward(ShipmentStatus(shipment.status), new):
        if details.get("source") == "webhook":  # polls re-read known history: not news
            chain.record(
                session,
                shipment.order_id,
                actor=actor,
                action="shipment.observation_ignored",
                details={**details, "reason": f"not past {shipment.status}"},
            )
        return "stale"
    shipment.status = new
    shipment.carrier_status = carrier_status
    shipment.last_event_at = now()
    shipment.updated_at = now()
    session.flush()
    advance_order(session, shipment.order_id, new, actor=actor, details=details)
    track_key = workflow.key(shipment.order_id, workflow.TRACK)
    if new in FINAL:
        queue.cancel_ready(session, track_key)
    else:
        queue.postpone_ready(session, track_key, next_poll_at)
    return "applied"


def shipped_email_sent(session: Session, order_id: int) -> bool:
    return (
        session.scalar(
            select(Notification.id).where(
                Notification.order_id == order_id, Notification.kind == "shipped"
            )
        )
        is not None
    )


def advance_order(
    session: Session, order_id: int, new: ShipmentStatus, *, actor: str, details: dict[str, Any]
) -> None:
    """Move the order as far as this shipment status allows, never backwards (order locked)."""
    current = service.lock(session, order_id)
    target = ORDER_STATUS[new]
    moved = False
    if current == OrderStatus.SCHEDULED and target in (OrderStatus.SHIPPED, OrderStatus.DELIVERED):
        service.move(
            session,
            order_id,
            OrderStatus.SHIPPED,
            actor=actor,
            action="shipment.collected",
            details=details,
        )
        workflow.notify(session, order_id, "shipped")
        current, moved = OrderStatus.SHIPPED, True
        placed_at = session.scalar(select(Order.created_at).where(Order.id == order_id))
        if placed_at is not None:
            PLACED_TO_SHIPPED.observe((now() - placed_at).total_seconds())
    if target == OrderStatus.DELIVERED and current == OrderStatus.SHIPPED:
        if shipped_email_sent(session, order_id):
            service.move(
                session,
                order_id,
                OrderStatus.DELIVERED,
                actor=actor,
                action="shipment.delivered",
                details=details,
            )
            moved = True
        # else: the e-mail step moves it to delivered once the e-mail is out
    elif target == OrderStatus.DELIVERY_FAILED and current in (
        OrderStatus.SCHEDULED,
        OrderStatus.SHIPPED,
    ):
        service.move(
            session,
            order_id,
            OrderStatus.DELIVERY_FAILED,
            actor=actor,
            action=f"shipment.{new}",
            details=details,
        )
        moved = True
        alerts.parcel_failed(
            session, order_id, "was lost" if new == ShipmentStatus.LOST else "is being returned"
        )
    elif target == OrderStatus.CANCELLED and current == OrderStatus.SCHEDULED:
        # The carrier cancelled a booking we did not cancel: nothing shipped, so undo it all.
        service.move(
            session,
            order_id,
            OrderStatus.DELIVERY_FAILED,
            actor=actor,
            action="shipment.cancelled_by_carrier",
            details=details,
        )
        service.release_stock(session, order_id)
        workflow.refund(session, order_id, reason="carrier_cancelled")
        moved = True
    if not moved:
        chain.record(session, order_id, actor=actor, action=f"shipment.{new}", details=details)
