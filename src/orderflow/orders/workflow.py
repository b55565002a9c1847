"""The order's saga in one place: which durable work follows each milestone.

Each task key is derived from the order and the step, so the same work is never queued twice,
and the same key doubles as the idempotency key of the outside call the step makes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from orderflow.orders.models import order_reference
from orderflow.tasks import queue

CHARGE = "charge"
REFUND = "refund"
BOOK = "book"
CANCEL_SHIPMENT = "cancel_shipment"
TRACK = "track"
NOTIFY = "notify"

# The outside service each step calls: its health gates the step's tasks.
DEPENDENCY_OF = {
    CHARGE: "paydesk",
    REFUND: "paydesk",
    BOOK: "bobs_post",
    CANCEL_SHIPMENT: "bobs_post",
    TRACK: "bobs_post",
    NOTIFY: "smtp",
    # not order steps, but outside calls all the same: the alert messages
    "alert_slack": "slack",
    "alert_email": "smtp",
}


# Lanes: when more work is due than a batch takes, a dependency's lower lane is claimed first,
# so that tracking polls never hold up bookings at the carrier's rate limit.
LANES = {CHARGE: 0, REFUND: 0, BOOK: 1, CANCEL_SHIPMENT: 1, TRACK: 2, NOTIFY: 3}
OTHER_LANE = 4  # alerts, periodic jobs, redrives


def lane_of(kind: str) -> int:
    return LANES.get(kind, OTHER_LANE)


def key(order_id: int, step: str, detail: str | None = None) -> str:
    base = f"{order_reference(order_id)}:{step}"
    return f"{base}:{detail}" if detail else base


def charge(session: Session, order_id: int) -> None:
    queue.enqueue(session, CHARGE, key(order_id, CHARGE), order_id=order_id)


def refund(session: Session, order_id: int, reason: str) -> None:
    queue.enqueue(
        session, REFUND, key(order_id, REFUND), order_id=order_id, payload={"reason": reason}
    )


def book(session: Session, order_id: int) -> None:
    queue.enqueue(session, BOOK, key(order_id, BOOK), order_id=order_id)


def cancel_shipment(session: Session, order_id: int) -> None:
    queue.enqueue(session, CANCEL_SHIPMENT, key(order_id, CANCEL_SHIPMENT), order_id=order_id)


def track(session: Session, order_id: int, first_poll_at: datetime) -> None:
    queue.enqueue(session, TRACK, key(order_id, TRACK), order_id=order_id, run_at=first_poll_at)


def notify(session: Session, order_id: int, milestone: str) -> None:
    queue.enqueue(
        session,
        NOTIFY,
        key(order_id, NOTIFY, milestone),
        order_id=order_id,
        payload={"milestone": milestone},
    )
