"""Carrier words → our words. A carrier is an adapter plus one such mapping.

Our shipment statuses carry a rank: an observation is applied only if it moves the shipment
forward (equal rank is allowed between the repeatable 'out for delivery' / 'attempted' pair),
so duplicated and reordered observations can never move anything backwards.
"""

from __future__ import annotations

from enum import StrEnum

from orderflow.orders.status import OrderStatus


class ShipmentStatus(StrEnum):
    BOOKED = "booked"
    SHIPPED = "shipped"  # collected by the carrier: the goods have left
    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERY_ATTEMPTED = "delivery_attempted"
    DELIVERED = "delivered"
    RETURNED = "returned"
    LOST = "lost"
    CANCELLED = "cancelled"


S = ShipmentStatus

RANK: dict[ShipmentStatus, int] = {
    S.BOOKED: 0,
    S.SHIPPED: 1,
    S.IN_TRANSIT: 2,
    S.OUT_FOR_DELIVERY: 3,
    S.DELIVERY_ATTEMPTED: 3,
    S.DELIVERED: 9,
    S.RETURNED: 9,
    S.LOST: 9,
    S.CANCELLED: 9,
}
FINAL = frozenset(s for s, r in RANK.items() if r == 9)

# What each shipment status means for the order.
ORDER_STATUS: dict[ShipmentStatus, OrderStatus] = {
    S.BOOKED: OrderStatus.SCHEDULED,
    S.SHIPPED: OrderStatus.SHIPPED,
    S.IN_TRANSIT: OrderStatus.SHIPPED,
    S.OUT_FOR_DELIVERY: OrderStatus.SHIPPED,
    S.DELIVERY_ATTEMPTED: OrderStatus.SHIPPED,
    S.DELIVERED: OrderStatus.DELIVERED,
    S.RETURNED: OrderStatus.DELIVERY_FAILED,
    S.LOST: OrderStatus.DELIVERY_FAILED,
    S.CANCELLED: OrderStatus.CANCELLED,
}

BOBS_POST: dict[str, ShipmentStatus] = {
    "booked": S.BOOKED,
    "collected": S.SHIPPED,
    "in_transit": S.IN_TRANSIT,
    "out_for_delivery": S.OUT_FOR_DELIVERY,
    "failed_attempt": S.DELIVERY_ATTEMPTED,
    "complete": S.DELIVERED,
    "returned_to_sender": S.RETURNED,
    "lost": S.LOST,
    "cancelled": S.CANCELLED,
}

CARRIERS = {"bobs_post": BOBS_POST}


def translate(carrier: str, carrier_status: str) -> ShipmentStatus | None:
    """Our status for the carrier's word, or None if we do not know the word (never guessed)."""
    return CARRIERS[carrier].get(carrier_status)


def moves_forward(current: ShipmentStatus, new: ShipmentStatus) -> bool:
    if current in FINAL:
        return False
    if RANK[new] == RANK[current]:
        return new != current and RANK[new] == RANK[S.OUT_FOR_DELIVERY]
    return RANK[new] > RANK[current]
