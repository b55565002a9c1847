"""What an order is waiting for, in words: from its open work and its dependencies' health."""

from __future__ import annotations

from typing import Any

from orderflow.orders.workflow import BOOK, CANCEL_SHIPMENT, CHARGE, NOTIFY, REFUND, TRACK

WORK = {
    CHARGE: "the payment at Paydesk",
    REFUND: "the refund at Paydesk",
    BOOK: "the booking with Bob's Post",
    CANCEL_SHIPMENT: "the cancellation at Bob's Post",
    TRACK: "delivery (Bob's Post has the parcel)",
    NOTIFY: "an e-mail to be sent",
}
# Which open work says most about the order: a dead letter, then an outage, then the rest.
ORDER = {CHARGE: 0, REFUND: 0, BOOK: 1, CANCEL_SHIPMENT: 1, TRACK: 2, NOTIFY: 3}


def of_work(work: dict[str, Any]) -> str:
    """One piece of open work (an `order_view` work row) as a sentence."""
    what = WORK.get(work["step"], str(work["step"]).replace("_", " "))
    if work["status"] == "dead":
        return f"stuck: {what} failed and needs a person (a dead letter)"
    if work.get("waiting_for"):
        return str(work["waiting_for"]["message"])
    if work["status"] == "running":
        return f"working on {what} now"
    if work.get("attempts") and work["step"] != TRACK:
        times = "once" if work["attempts"] == 1 else f"{work['attempts']} times"
        return f"retrying {what} (it failed {times})"
    return f"waiting for {what}"


def _rank(work: dict[str, Any]) -> tuple[int, int]:
    if work["status"] == "dead":
        return (0, 0)
    if work.get("waiting_for"):
        return (1, 0)
    return (2, ORDER.get(work["step"], 9))


def of_order(work: list[dict[str, Any]]) -> str | None:
    """What the order waits for, from its open work: None when nothing is open."""
    if not work:
        return None
    return of_work(min(work, key=_rank))
