"""Re-sending a lost parcel from the console, in real headless Chromium against a whole stack on
PostgreSQL (API server, simulators, a worker running in the background): proposed by one admin,
approved by another in a second browser; the replacement ships with one booking and one
e-mail and no charge. The pages are checked with axe-core and screenshotted
(tests/artifacts/console/)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from tests.support.accessibility import check_page
from tests.support.browser import log_in, new_page
from tests.support.outside import wait_for
from tests.support.stack import PASSWORD, Stack

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(120),
    pytest.mark.parametrize(
        "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
    ),
]


def reached(stack: Stack, order_id: int, status: str) -> dict[str, Any]:
    """Wait (the background worker and the webhooks do the work) until the order is `status`."""
    wait_for(lambda: stack.order(order_id)["status"] == status, timeout=30)
    return stack.order(order_id)


def lost_parcel(stack: Stack) -> dict[str, Any]:
    """An order shipped, then lost by Bob's Post (postcode STUCK: the simulator moves its
    parcels only when told, so the replacement waits at "booked" too)."""
    stack.product("WIDGET", stock=10)
    order = stack.place(stack.customer(postcode="STUCK"), [("WIDGET", 1)])
    shipment = reached(stack, order["id"], "scheduled")["shipment"]["shipment_id"]
    stack.outside.force_carrier_status(shipment, "collected")
    reached(stack, order["id"], "shipped")
    stack.outside.force_carrier_status(shipment, "lost")
    return reached(stack, order["id"], "delivery_failed")


def test_a_lost_parcel_is_resent_with_four_eyes_and_the_replacement_ships_once(
    stack: Stack, browser: Browser, working: None
) -> None:
    """A viewer sees no re-send button; alice proposes the re-send (and cannot approve it);
    bob approves it in his own browser and follows the link to the replacement, which links
    back, ships with one booking and one "shipped" e-mail, and was never charged."""
    original = lost_parcel(stack)
    ref = original["reference"]
    stack.user("alice")
    stack.user("bob")
    stack.user("vera", "viewer")
    with (
        new_page(browser, stack.server.url) as vera,
        new_page(browser, stack.server.url) as alice,
        new_page(browser, stack.server.url) as bob,
    ):
        log_in(vera, "vera", PASSWORD)
        vera.goto(f"/console/orders/{ref}")
        expect(vera.locator("#status")).to_have_text("delivery failed")
        expect(vera.get_by_role("button", name="Re-send parcel")).to_have_count(0)

        alice.on("dialog", lambda d: d.accept())
        log_in(alice, "alice", PASSWORD)
        alice.goto(f"/console/orders/{ref}")
        check_page(alice, "order-delivery-failed")
        alice.get_by_role("button", name="Re-send parcel").click()
        expect(alice.get_by_role("status")).to_contain_text("another admin must approve")
        expect(alice.locator("#proposals")).to_contain_text("Re-send parcel proposed by user:alice")
        expect(alice.locator("#proposals").get_by_role("button", name="Approve")).to_have_count(0)
        expect(alice.get_by_role("button", name="Re-send parcel")).to_have_count(0)
        check_page(alice, "order-resend-proposed")

        bob.on("dialog", lambda d: d.accept())
        log_in(bob, "bob", PASSWORD)
        bob.goto(f"/console/orders/{ref}")
        bob.locator("#proposals").get_by_role("button", name="Approve").click()
        expect(bob.get_by_role("status")).to_contain_text("Approved")
        links = bob.locator("#replacement-links")
        expect(links).to_contain_text("Parcel re-sent as ORD-")
        expect(bob.locator("#history")).to_contain_text("re-sent as ORD-")
        expect(bob.locator("#history")).to_contain_text("by user:bob")
        expect(bob.locator("#verdict")).to_contain_text("History verified ✓")
        check_page(bob, "order-resent")
        links.get_by_role("link").click()

        new_ref = stack.order(original["id"])["replaced_by"]
        expect(bob.locator("#reference")).to_have_text(new_ref)
        expect(bob.locator("#replacement-links")).to_contain_text(f"replacement) of {ref}")
        expect(bob.locator("#history")).to_contain_text(
            f"placed as a replacement of {ref} by user:bob"
        )
        expect(bob.locator("#history")).to_contain_text(f"paid by {ref}'s charge")
        expect(bob.locator("#payment")).to_contain_text(f"paid by the charge of {ref}")
        expect(bob.locator("#status")).to_have_text("scheduled", timeout=20_000)
        new_id = int(new_ref.removeprefix("ORD-"))
        shipment = stack.order(new_id)["shipment"]["shipment_id"]
        stack.outside.force_carrier_status(shipment, "collected")
        expect(bob.locator("#status")).to_have_text("shipped", timeout=20_000)  # live update
        expect(bob.locator("#cancel-form")).to_have_count(0)  # a shipped order: no cancel
        expect(bob.locator("#verdict")).to_contain_text("History verified ✓")
        check_page(bob, "order-replacement-shipped")
        bob.locator("#replacement-links").get_by_role("link").click()
        expect(bob.locator("#reference")).to_have_text(ref)

    def shipped() -> list[str]:
        return [
            m.subject
            for m in stack.outside.mail.messages()
            if new_ref in m.subject and "shipped" in m.subject.lower()
        ]

    wait_for(lambda: bool(shipped()))
    time.sleep(1.0)  # a duplicate would come right after the first
    assert len(shipped()) == 1
    assert stack.outside.carrier_stats()["bookings_by_reference"] == {ref: 1, new_ref: 1}
    assert stack.outside.paydesk_stats()["charges_by_order_reference"] == {ref: 1}
