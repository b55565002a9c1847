"""Re-sent parcels in pure code: how the chaos checks count charges, and the history's words."""

from __future__ import annotations

from collections import Counter
from typing import Any

from orderflow.audit import timeline
from orderflow.chaos.checks import Evidence, charges_by_purchase, figures, purchase_of


def evidence(charges: dict[str, int], replaces: dict[str, str], accepted: list[str]) -> Evidence:
    return Evidence(
        scenario={},
        accepted={ref: i for i, ref in enumerate(accepted, 1)},
        rejected=Counter(),
        placement_seconds=0.0,
        statuses={ref: "shipped" for ref in accepted},
        histories={},
        charges=charges,
        bookings={ref: 1 for ref in accepted},
        mails=[],
        dead_letters=0,
        dead_letter_groups=[],
        dead_events=[],
        stock_sold={},
        stock_ordered={},
        paydesk_by_status={},
        carrier_by_status={},
        carrier_503_in_outage=0,
        carrier_requests_hung=0,
        webhooks={},
        kills=0,
        unexpected_exits=[],
        outage_seconds=0.0,
        recovery_seconds=None,
        told_seconds=None,
        total_seconds=1.0,
        replaces=replaces,
    )


def test_a_replacement_is_paid_by_the_first_order_of_its_line() -> None:
    """A replacement of a replacement is paid by the original; a cycle cannot loop forever."""
    replaces = {"ORD-000003": "ORD-000002", "ORD-000002": "ORD-000001"}
    assert purchase_of("ORD-000003", replaces) == "ORD-000001"
    assert purchase_of("ORD-000009", replaces) == "ORD-000009"
    assert purchase_of("ORD-000001", {"ORD-000001": "ORD-000002", "ORD-000002": "ORD-000001"})


def test_a_replacement_covered_by_its_original_charge_is_neither_missing_nor_double() -> None:
    """One charge for the original pays for its replacement too: no charge missing."""
    both = ["ORD-000001", "ORD-000002"]
    f = figures(evidence({"ORD-000001": 1}, {"ORD-000002": "ORD-000001"}, both))
    assert (f.charged, f.missing_charges, f.double_charges, f.extra_charges) == (1, 0, 0, 0)


def test_a_replacement_charged_itself_is_a_second_charge_for_the_same_goods() -> None:
    """A replacement that Paydesk charged is caught as a double charge of its purchase, even
    when only the original was among the orders the run placed."""
    charges = {"ORD-000001": 1, "ORD-000002": 1}
    folded = charges_by_purchase(charges, {"ORD-000002": "ORD-000001"})
    assert folded == {"ORD-000001": 2}
    f = figures(evidence(charges, {"ORD-000002": "ORD-000001"}, ["ORD-000001"]))
    assert (f.double_charges, f.extra_charges) == (1, 1)


def test_an_uncharged_order_without_an_original_is_still_a_missing_charge() -> None:
    """The accounting is not weakened: an order that is no replacement needs its own charge."""
    f = figures(evidence({"ORD-000001": 1}, {}, ["ORD-000001", "ORD-000002"]))
    assert f.missing_charges == 1


def _entry(action: str, details: dict[str, Any], actor: str = "user:alice") -> dict[str, Any]:
    return {"action": action, "actor": actor, "details": details, "to": None}


def test_the_history_says_who_resent_what_and_whose_charge_paid() -> None:
    """Both orders' timelines name the other order and the person; the payment line names the
    original's charge."""
    placed = _entry(
        "order.replacement_placed",
        {"replaces": "ORD-000001", "lines": [["WIDGET", 2]], "total": 2598, "currency": "GBP"},
    )
    assert timeline.describe(placed) == (
        "placed as a replacement of ORD-000001 by user:alice: 2 x WIDGET, total £25.98"
    )
    resent = _entry("order.resent", {"replacement": "ORD-000002", "reason": "lost"})
    assert timeline.describe(resent) == "re-sent as ORD-000002 by user:alice: lost"
    paid = _entry(
        "payment.covered_by_original",
        {"original": "ORD-000001", "payment_id": "pay_1", "amount": 2598, "currency": "GBP"},
    )
    assert timeline.describe(paid) == (
        "paid by ORD-000001's charge (Paydesk pay_1, £25.98): not charged again"
    )
