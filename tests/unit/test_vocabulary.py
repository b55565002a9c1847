"""Bob's Post's words mapped once; observations only ever move a shipment forward."""

from __future__ import annotations

import itertools

from orderflow.orders.status import OrderStatus
from orderflow.shipping.vocabulary import (
    BOBS_POST,
    FINAL,
    ORDER_STATUS,
    ShipmentStatus,
    moves_forward,
    translate,
)

S = ShipmentStatus


def test_the_contract_mapping() -> None:
    """collected = shipped, complete = delivered, returned/lost = delivery_failed."""
    assert ORDER_STATUS[translate("bobs_post", "collected") or S.BOOKED] == OrderStatus.SHIPPED
    assert ORDER_STATUS[translate("bobs_post", "complete") or S.BOOKED] == OrderStatus.DELIVERED
    for word in ("returned_to_sender", "lost"):
        assert ORDER_STATUS[translate("bobs_post", word) or S.BOOKED] == (
            OrderStatus.DELIVERY_FAILED
        )


def test_every_documented_carrier_status_is_mapped_and_unknown_ones_are_not_guessed() -> None:
    """All nine words of the spec are known; anything else translates to None."""
    documented = {
        "booked",
        "collected",
        "in_transit",
        "out_for_delivery",
        "failed_attempt",
        "complete",
        "returned_to_sender",
        "lost",
        "cancelled",
    }
    assert set(BOBS_POST) == documented
    assert translate("bobs_post", "teleported") is None
    assert translate("bobs_post", "COLLECTED") is None


def test_nothing_moves_out_of_a_final_status() -> None:
    """Once delivered, returned, lost or cancelled, no observation applies."""
    for final, new in itertools.product(FINAL, ShipmentStatus):
        assert not moves_forward(final, new)


def test_no_observation_moves_a_shipment_backwards() -> None:
    """For every pair, at most one direction is 'forward' (except the repeatable pair)."""
    repeatable = {S.OUT_FOR_DELIVERY, S.DELIVERY_ATTEMPTED}
    for a, b in itertools.permutations(ShipmentStatus, 2):
        if {a, b} == repeatable:
            assert moves_forward(a, b) and moves_forward(b, a)
        else:
            assert not (moves_forward(a, b) and moves_forward(b, a)), (a, b)
    assert not moves_forward(S.IN_TRANSIT, S.SHIPPED)
    assert moves_forward(S.BOOKED, S.DELIVERED)
