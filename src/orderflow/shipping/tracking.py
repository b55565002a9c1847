"""Apply what the carrier tells us (webhook or poll) to the shipment and the order.

Observations are stored once each (by event id), applied only if they move the shipment
forward, and turned into order moves through the carrier-neutral vocabulary. The order becomes
`delivered` only once its "shipped" e-mail is out, so `delivered` always implies both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from orderflow import deferred
from orderflow.alerts import rules as alerts
from orderflow.audit import chain
from orderflow.clock import now
from orderflow.db import insert_ignore_many
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


@dataclass(frozen=True)
class Observation:
    """One thing the carrier told us about a shipment (a webhook's event, or one of a poll's)."""

    carrier: str
    event_id: str
    carrier_shipment_id: str
    reference: str | None
    carrier_status: str
    occurred_at: datetime
    source: str


def observe(
    session: Session, observation: Observation, *, actor: str, next_poll_at: datetime
) -> str:
    """Store one observation and apply it; returns what became of it."""
    return observe_many(session, [observation], actor=actor, next_poll_at=next_poll_at)[0]


def observe_many(
    session: Session,
    observations: Sequence[Observation],
    *,
    actor: str,
    next_poll_at: datetime,
) -> list[str]:
    """Store observations once each (by event id) and apply them in the order given; returns
    what became of each. A handful of statements for all of them, not a handful each."""
    if not observations:
        return []
    shipment_ids = {o.carrier_shipment_id for o in observations}
    # Lock every order concerned, in one statement, before storing anything: those the events'
    # references name and those their shipments belong to. A booking being committed for such
    # an order holds the same lock, so an event either waits for the booking and finds its
    # shipment, or commits first and is seen by the booking's replay of unmatched events (which
    # reads after taking the lock): neither transaction can miss the other.
    named = {parse_order_reference(o.reference) for o in observations}
    known = set(
        session.scalars(
            select(Shipment.order_id).where(Shipment.carrier_shipment_id.in_(shipment_ids))
        )
    )
    locked = {i for i in named | known if i is not None}
    chain.lock_heads(session, sorted(locked), whole_rows=True)
    stored = insert_ignore_many(
        session,
        CarrierEvent,
        [
            {
                "carrier": o.carrier,
                "event_id": o.event_id,
                "carrier_shipment_id": o.carrier_shipment_id,
                "reference": o.reference,
                "carrier_status": o.carrier_status,
                "occurred_at": o.occurred_at,
                "received_at": now(),
                "source": o.source,
                "outcome": "pending",
            }
            for o in {o.event_id: o for o in reversed(observations)}.values()
        ],
        "event_id",
    )
    shipments = _shipments(session, shipment_ids) if stored else {}
    late = {s.order_id for s in shipments.values()} - locked  # booked since we looked
    if late:
        chain.lock_heads(session, sorted(late), whole_rows=True)
        shipments = _shipments(session, shipment_ids)
    batch = deferred.current()
    if batch is not None:
        batch.email_scope, batch.shipped_emails = frozenset(locked | late), None
    outcomes: list[str] = []
    decided: dict[str, str] = {}
    for o in observations:
        if o.event_id not in stored or o.event_id in decided:
            outcomes.append("duplicate")
            continue
        shipment = shipments.get(o.carrier_shipment_id)
        if shipment is None:
            outcome = "unmatched"  # booked, but our booking step has not committed yet: kept
        else:
            outcome = _apply_event(session, shipment, o, actor=actor, next_poll_at=next_poll_at)
        decided[o.event_id] = outcome
        outcomes.append(outcome)
    if decided:
        table = CarrierEvent.__table__
        assert isinstance(table, Table)
        session.connection().execute(
            update(table)
            .where(table.c.event_id == bindparam("b_event"))
            .values(outcome=bindparam("b_outcome")),
            [{"b_event": e, "b_outcome": outcome} for e, outcome in decided.items()],
        )
    return outcomes


def current_shipment(session: Session, order_id: int) -> Shipment | None:
    """The order's shipment as it is now (call with the order locked).

    In a deferred batch, the shipments of all the orders it locked are read on the first call,
    in one statement, and kept: the locks keep them current, and this transaction's own
    changes are made to the very objects kept."""
    batch = deferred.current()
    if batch is not None and order_id in batch.heads:
        if batch.shipments is None:
            batch.shipments = {
                s.order_id: s for s in _fresh(session, Shipment.order_id.in_(sorted(batch.heads)))
            }
        found: Shipment | None = batch.shipments.get(order_id)
        if found is not None:
            return found  # (one booked by this batch is not kept: read below)
    return next(iter(_fresh(session, Shipment.order_id == order_id)), None)


def _fresh(session: Session, where: Any) -> list[Shipment]:
    session.flush()  # what this transaction changed in memory first: it is about to be re-read
    return list(
        session.scalars(select(Shipment).where(where).execution_options(populate_existing=True))
    )


def _shipments(session: Session, shipment_ids: set[str]) -> dict[str, Shipment]:
    """The shipments as they are now (their orders locked), by carrier shipment id."""
    return {
        s.carrier_shipment_id: s
        for s in _fresh(session, Shipment.carrier_shipment_id.in_(shipment_ids))
    }


def replay_unmatched(
    session: Session, shipment: Shipment, *, actor: str, next_poll_at: datetime
) -> None:
    """Apply observations that arrived before the booking was recorded (its order locked).

    In a deferred batch this happens once for all the batch's bookings, just before its rows
    are written (one query, not one per booking); the orders stay locked until then."""
    batch = deferred.current()
    if batch is None:
        _replay(session, {shipment.carrier_shipment_id: (shipment, actor, next_poll_at)})
        return
    batch.booked[shipment.carrier_shipment_id] = (shipment, actor, next_poll_at)
    batch.before_flush["replay_unmatched"] = lambda: _replay(session, batch.pop_booked())


def _replay(session: Session, booked: dict[str, tuple[Shipment, str, datetime]]) -> None:
    """`booked`: by carrier shipment id, the shipment, the actor and the next poll."""
    events = session.scalars(
        select(CarrierEvent)
        .where(
            CarrierEvent.carrier_shipment_id.in_(sorted(booked)),
            CarrierEvent.outcome == "unmatched",
        )
        .order_by(CarrierEvent.occurred_at, CarrierEvent.id)
    ).all()
    for event in events:
        shipment, actor, next_poll_at = booked[event.carrier_shipment_id]
        event.outcome = _apply_event(
            session, shipment, event, actor=actor, next_poll_at=next_poll_at
        )


class _Event(Protocol):
    """What applying needs of an event: an `Observation`, or a stored `CarrierEvent`."""

    @property
    def event_id(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def carrier_status(self) -> str: ...
    @property
    def occurred_at(self) -> datetime: ...


def _apply_event(
    session: Session, shipment: Shipment, event: _Event, *, actor: str, next_poll_at: datetime
) -> str:
    details = {
        "event_id": event.event_id,
        "source": event.source,
        "occurred_at": event.occurred_at.isoformat(),
    }
    return apply(
        session,
        shipment,
        event.carrier_status,
        actor=actor,
        next_poll_at=next_poll_at,
        details=details,
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
    advance_order(session, shipment.order_id, new, actor=actor, details=details)
    track_key = workflow.key(shipment.order_id, workflow.TRACK)
    if new in FINAL:
        queue.cancel_ready(session, track_key)
    else:
        queue.postpone_ready(session, track_key, next_poll_at)
    return "applied"


def shipped_email_sent(session: Session, order_id: int) -> bool:
    """Whether the order's "shipped" e-mail went out (its order locked). For a group of carrier
    events, one query answers it for every order of the group."""
    batch = deferred.current()
    if batch is not None and order_id in batch.email_scope:
        if batch.shipped_emails is None:
            batch.shipped_emails = set(
                session.scalars(
                    select(Notification.order_id).where(
                        Notification.order_id.in_(sorted(batch.email_scope)),
                        Notification.kind == "shipped",
                    )
                )
            )
        return order_id in batch.shipped_emails
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
        order = session.get(Order, order_id)  # loaded with its lock
        if order is not None:
            PLACED_TO_SHIPPED.observe((now() - order.created_at).total_seconds())
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
