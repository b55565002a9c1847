"""The booking, tracking and cancellation steps with Bob's Post."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from orderflow.audit import chain
from orderflow.clock import after, now
from orderflow.orders import service, workflow
from orderflow.orders.models import Order
from orderflow.orders.status import OrderStatus
from orderflow.shipping import tracking
from orderflow.shipping.bobs_post import CARRIER, BobsPostClient, Booking, ShipmentState
from orderflow.shipping.models import Shipment
from orderflow.shipping.vocabulary import FINAL, ShipmentStatus
from orderflow.tasks import queue
from orderflow.tasks.errors import PermanentError
from orderflow.tasks.queue import ClaimedTask
from orderflow.tasks.step import Reschedule

ACTOR = "worker:shipping"
KEY_KEPT = timedelta(days=29)  # Bob's Post honours an Idempotency-Key for 30 days


def booking_request(order: Order) -> dict[str, Any]:
    """The body of the booking: one parcel with everything, to the address of the order."""
    ship_to = order.ship_to
    return {
        "reference": order.reference,
        "recipient": {
            "name": ship_to["name"],
            "email": ship_to["email"],
            "phone": ship_to.get("phone"),
            "address": ship_to["address"],
        },
        "parcels": [
            {
                "weight_grams": sum(ln.weight_grams * ln.quantity for ln in order.lines),
                "description": ", ".join(f"{ln.quantity} x {ln.name}" for ln in order.lines),
            }
        ],
        "service": "standard",
    }


@dataclass(frozen=True)
class BookWork:
    idempotency_key: str
    reference: str
    body: dict[str, Any]
    look_first: bool  # an earlier attempt may have booked: reconcile by reference first
    book: bool  # False once the order was cancelled: only find (and then undo) a booking


class BookStep:
    kind = workflow.BOOK
    dependency = workflow.DEPENDENCY_OF[kind]
    reads = frozenset({"shipment", "lines"})  # of the order, loaded for `prepare`

    def __init__(self, carrier: BobsPostClient, poll_seconds: float) -> None:
        self.carrier = carrier
        self.poll_seconds = poll_seconds

    def prepare(self, session: Session, task: ClaimedTask) -> BookWork | None:
        order = session.get(Order, task.order_id)
        if order is None or order.shipment is not None:
            return None
        paid = order.status == OrderStatus.PAID
        maybe_booked = queue.may_have_happened(task)
        if not paid and not maybe_booked:
            return None  # cancelled before any attempt could reach the carrier
        revision = int(order.ship_to.get("revision", 0))
        # After an attempt that may have booked, booking again with the same key returns that
        # booking (Bob's Post keeps keys 30 days): a look-up by reference is needed only to
        # undo one (cancelled), when the key changed (corrected address), or when it expired.
        key_expired = task.created_at is not None and now() - task.created_at > KEY_KEPT
        return BookWork(
            # A corrected address is a different booking request: it gets its own key.
            idempotency_key=task.key if revision == 0 else f"{task.key}:r{revision}",
            reference=order.reference,
            body=booking_request(order),
            look_first=maybe_booked and (not paid or revision > 0 or key_expired),
            book=paid,
        )

    def perform(self, work: BookWork) -> Booking | None:
        if work.look_first:
            live = [
                b for b in self.carrier.find_by_reference(work.reference) if b.status != "cancelled"
            ]
            if live:
                return live[0]
        if not work.book:
            return None
        return self.carrier.book(idempotency_key=work.idempotency_key, body=work.body)

    def complete(self, session: Session, task: ClaimedTask, result: Booking | None) -> None:
        order_id = task.order_id
        assert order_id is not None
        if result is None:
            return
        status = service.lock(session, order_id)
        shipment = Shipment(
            order_id=order_id,
            carrier=CARRIER,
            carrier_shipment_id=result.shipment_id,
            tracking_number=result.tracking_number,
            # Recorded as booked; anything further the answer showed (a booking found by
            # reference after an ambiguous failure may have moved on) is applied below.
            carrier_status="booked",
            status=ShipmentStatus.BOOKED,
        )
        session.add(shipment)
        details = {
            "carrier": CARRIER,
            "shipment_id": result.shipment_id,
            "tracking_number": result.tracking_number,
        }
        if status != OrderStatus.PAID:
            # Cancelled while the booking was in flight: undo the booking.
            chain.record(
                session,
                order_id,
                actor=ACTOR,
                action="shipment.booked_after_cancel",
                details=details,
            )
            workflow.cancel_shipment(session, order_id)
            return
        service.move(
            session,
            order_id,
            OrderStatus.SCHEDULED,
            actor=ACTOR,
            action="shipment.booked",
            details=details,
        )
        next_poll = after(self.poll_seconds)
        workflow.track(session, order_id, next_poll)
        if result.status != "booked":
            tracking.apply(
                session,
                shipment,
                result.status,
                actor=ACTOR,
                next_poll_at=next_poll,
                details={"source": "booking", "shipment_id": result.shipment_id},
            )
        tracking.replay_unmatched(session, shipment, actor="carrier", next_poll_at=next_poll)


@dataclass(frozen=True)
class TrackWork:
    shipment_id: str
    reference: str


class TrackStep:
    """Poll a shipment whose webhooks are overdue (webhooks get lost; polling never does)."""

    kind = workflow.TRACK
    dependency = workflow.DEPENDENCY_OF[kind]
    reads = frozenset({"shipment"})  # of the order, loaded for `prepare`

    def __init__(
        self,
        carrier: BobsPostClient,
        poll_seconds: float,
        collection_deadline: float = 3 * 86400.0,
        delivery_deadline: float = 30 * 86400.0,
    ) -> None:
        self.carrier = carrier
        self.poll_seconds = poll_seconds
        self.collection_deadline = timedelta(seconds=collection_deadline)
        self.delivery_deadline = timedelta(seconds=delivery_deadline)

    def prepare(self, session: Session, task: ClaimedTask) -> TrackWork | None:
        order = session.get(Order, task.order_id)
        shipment = order.shipment if order is not None else None
        if order is None or shipment is None or ShipmentStatus(shipment.status) in FINAL:
            return None
        self._check_deadlines(shipment)
        return TrackWork(shipment_id=shipment.carrier_shipment_id, reference=order.reference)

    def _check_deadlines(self, shipment: Shipment) -> None:
        """Polling is bounded: an overdue parcel becomes a dead letter for people to chase."""
        age = now() - shipment.booked_at
        if shipment.status == ShipmentStatus.BOOKED and age > self.collection_deadline:
            raise PermanentError(
                f"not collected within {self.collection_deadline} of booking "
                f"(booked {shipment.booked_at:%Y-%m-%d %H:%M} UTC): ask Bob's Post"
            )
        if age > self.collection_deadline + self.delivery_deadline:
            raise PermanentError(
                f"not delivered within {self.collection_deadline + self.delivery_deadline} "
                f"of booking (last status {shipment.carrier_status}): ask Bob's Post"
            )

    def perform(self, work: TrackWork) -> tuple[TrackWork, ShipmentState]:
        return work, self.carrier.get(work.shipment_id)

    def complete(
        self, session: Session, task: ClaimedTask, result: tuple[TrackWork, ShipmentState]
    ) -> Reschedule | None:
        work, state = result
        next_poll = now() + timedelta(seconds=self.poll_seconds)
        tracking.observe_many(
            session,
            [
                tracking.Observation(
                    carrier=CARRIER,
                    event_id=f"poll:{work.shipment_id}:{e.status}:{e.occurred_at.isoformat()}",
                    carrier_shipment_id=work.shipment_id,
                    reference=work.reference,
                    carrier_status=e.status,
                    occurred_at=e.occurred_at,
                    source="poll",
                )
                for e in state.events
            ],
            actor="worker:tracking",
            next_poll_at=next_poll,
        )
        assert task.order_id is not None
        shipment = tracking.current_shipment(session, task.order_id)
        assert shipment is not None
        if ShipmentStatus(shipment.status) in FINAL:
            return None
        return Reschedule(next_poll)


class CancelShipmentStep:
    kind = workflow.CANCEL_SHIPMENT
    dependency = workflow.DEPENDENCY_OF[kind]

    def __init__(self, carrier: BobsPostClient) -> None:
        self.carrier = carrier

    def prepare(self, session: Session, task: ClaimedTask) -> str | None:
        shipment = session.scalar(select(Shipment).where(Shipment.order_id == task.order_id))
        if shipment is None or shipment.status == ShipmentStatus.CANCELLED:
            return None
        return shipment.carrier_shipment_id

    def perform(self, shipment_id: str) -> Booking:
        return self.carrier.cancel(shipment_id)

    def complete(self, session: Session, task: ClaimedTask, result: Booking) -> None:
        assert task.order_id is not None
        service.lock(session, task.order_id)
        shipment = tracking.current_shipment(session, task.order_id)
        assert shipment is not None
        shipment.status = ShipmentStatus.CANCELLED
        shipment.carrier_status = result.status
        shipment.updated_at = now()
        chain.record(
            session,
            task.order_id,
            actor=ACTOR,
            action="shipment.cancelled",
            details={"shipment_id": result.shipment_id},
        )
        queue.cancel_ready(session, workflow.key(task.order_id, workflow.TRACK))
        # A booking undone after the order was paid and cancelled: the refund is queued by
        # the cancellation itself (or by the charge step); nothing else to do here.
