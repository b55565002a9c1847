"""The order lifecycle, named once: statuses and the moves between them. Pure, no I/O."""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    PLACED = "placed"
    PAID = "paid"
    SCHEDULED = "scheduled"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    PAYMENT_FAILED = "payment_failed"
    CANCELLED = "cancelled"
    DELIVERY_FAILED = "delivery_failed"


S = OrderStatus

TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    # accepted, stock reserved; the charge is under way
    S.PLACED: frozenset(
        {
            S.PAID,  # Paydesk charged the card
            S.PAYMENT_FAILED,  # Paydesk declined it: stock released, customer told
            S.CANCELLED,  # by an admin before the charge landed (refunded if it did)
        }
    ),
    S.PAID: frozenset(
        {
            S.SCHEDULED,  # Bob's Post booked the shipment
            S.CANCELLED,  # by an admin: refund, stock released
        }
    ),
    S.SCHEDULED: frozenset(
        {
            S.SHIPPED,  # the carrier collected the parcel
            S.CANCELLED,  # by an admin before collection: booking cancelled, refund
            S.DELIVERY_FAILED,  # the carrier lost it or cancelled the booking itself
        }
    ),
    S.SHIPPED: frozenset(
        {
            S.DELIVERED,  # the carrier says complete, and the "shipped" e-mail is out
            S.DELIVERY_FAILED,  # returned to sender, or lost
        }
    ),
    S.DELIVERED: frozenset(),
    S.PAYMENT_FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.DELIVERY_FAILED: frozenset(),
}

TERMINAL = frozenset(s for s, nexts in TRANSITIONS.items() if not nexts)
CANCELLABLE = frozenset(s for s, nexts in TRANSITIONS.items() if S.CANCELLED in nexts)

# Forward progress along the happy path, used to never move an order backwards.
RANK = {S.PLACED: 0, S.PAID: 1, S.SCHEDULED: 2, S.SHIPPED: 3, S.DELIVERED: 4}


class IllegalTransition(Exception):
    def __init__(self, current: OrderStatus, target: OrderStatus) -> None:
        super().__init__(f"an order cannot move from {current} to {target}")
        self.current = current
        self.target = target


def sources_of(target: OrderStatus) -> frozenset[OrderStatus]:
    """Every status from which `target` may be reached in one move."""
    return frozenset(s for s, nexts in TRANSITIONS.items() if target in nexts)


def check(current: OrderStatus, target: OrderStatus) -> None:
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(current, target)
