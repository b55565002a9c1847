"""What an order is waiting for, in words: from its open work and its dependencies' health.

Once an order has reached its end (cancelled, say), what is left is clean-up, not something
the order waits for: a charge or booking queued before the cancellation only makes sure that
nothing happened (or undoes it), and is said so."""

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
# Work left after the order's end: what it does then.
CLEAN_UP = {
    CHARGE: "calling off the payment (no charge is taken; an earlier attempt is checked)",
    REFUND: "refunding the payment at Paydesk",
    BOOK: "calling off the booking (an earlier attempt is checked and undone)",
    CANCEL_SHIPMENT: "cancelling the booking at Bob's Post",
    TRACK: "a last look at the parcel's tracking",
    NOTIFY: "sending the customer's e-mail",
}
# Which open work says most about the order: a dead letter, then an outage, then the rest.
ORDER = {CHARGE: 0, REFUND: 0, BOOK: 1, CANCEL_SHIPMENT: 1, TRACK: 2, NOTIFY: 3}


def of_work(work: dict[str, Any], *, ended: bool = False) -> str:
    """One piece of open work (an `order_view` work row) as a sentence; `ended`: the order
    has reached its end, so the work is clean-up."""
    what = WORK.get(work["step"], str(work["step"]).replace("_", " "))
    if work["status"] == "dead":
        return f"stuck: {what} failed and needs a person (a dead letter)"
    if ended:
        return CLEAN_UP.get(work["step"], f"finishing {what}")
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


def of_order(work: list[dict[str, Any]], *, ended: bool = False) -> str | None:
    """What the order waits for (or, `ended`, its clean-up), from its open work: None when
    nothing is open."""
    if not work:
        return None
    return of_work(min(work, key=_rank), ended=ended)
