"""The order lifecycle table: legal moves only, never backwards, terminal ends stay put."""

from __future__ import annotations

import pytest

from orderflow.orders.status import (
    CANCELLABLE,
    RANK,
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    OrderStatus,
    check,
    sources_of,
)

S = OrderStatus


def test_terminal_statuses_are_the_four_ends_of_the_contract() -> None:
    """delivered, payment_failed, cancelled and delivery_failed have no way out."""
    assert {S.DELIVERED, S.PAYMENT_FAILED, S.CANCELLED, S.DELIVERY_FAILED} == TERMINAL


def test_cancellable_from_placed_paid_and_scheduled_only() -> None:
    """The contract's cancel window: before the carrier collected the parcel."""
    assert {S.PLACED, S.PAID, S.SCHEDULED} == CANCELLABLE


def test_no_move_goes_backwards_along_the_happy_path() -> None:
    """Every edge between happy-path statuses increases the rank."""
    for source, targets in TRANSITIONS.items():
        for target in targets:
            if source in RANK and target in RANK:
                assert RANK[target] > RANK[source], (source, target)


def test_delivered_is_reachable_only_from_shipped() -> None:
    """`delivered` implies the order was `shipped` first."""
    assert sources_of(S.DELIVERED) == {S.SHIPPED}
    assert sources_of(S.PAYMENT_FAILED) == {S.PLACED}


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.PAID, S.PLACED),
        (S.SHIPPED, S.CANCELLED),
        (S.DELIVERED, S.SHIPPED),
        (S.PLACED, S.SHIPPED),
        (S.CANCELLED, S.PAID),
        (S.PAYMENT_FAILED, S.PAID),
    ],
)
def test_illegal_moves_raise(current: OrderStatus, target: OrderStatus) -> None:
    """An illegal move is an error naming both ends, never a silent no-op."""
    with pytest.raises(IllegalTransition, match=f"from {current} to {target}"):
        check(current, target)


def test_every_status_has_an_entry() -> None:
    """The table names every status once."""
    assert set(TRANSITIONS) == set(OrderStatus)
