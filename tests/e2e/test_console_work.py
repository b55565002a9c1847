"""The console's work pages in real headless Chromium against a whole stack on PostgreSQL (API
server, simulators, a worker running in the background): a dead letter fixed and redriven from
the browser ships once, a group redrive with its dry run then progress, the orders search, and
the dispute bundle download verified offline. Each page is checked with axe-core and
screenshotted (tests/artifacts/console/)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from orderflow.audit import verify_bundle
from tests.support.accessibility import check_page
from tests.support.browser import log_in, new_page
from tests.support.outside import wait_for
from tests.support.stack import PASSWORD, Stack

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(90),
    pytest.mark.parametrize(
        "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
    ),
]


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    with new_page(browser, stack.server.url) as p:
        p.on("dialog", lambda d: d.accept())  # the confirmations (data-confirm) are accepted
        yield p


def dead_bookings(stack: Stack, count: int) -> list[dict[str, object]]:
    """`count` orders whose booking the carrier refuses (country XX), dead letters by now."""
    customer = stack.customer(country="XX")
    stack.product("WIDGET", stock=50)
    orders = [stack.place(customer, [("WIDGET", 1)]) for _ in range(count)]
    wait_for(lambda: stack.api.get("/dead-letters").json()["total"] >= count)
    return orders


def test_a_dead_letter_fixed_and_redriven_from_the_browser_ships_once(
    stack: Stack, page: Page, working: None
) -> None:
    """Support finds the refused booking in the inbox, reads its evidence, corrects the country
    and redrives: the order is delivered with exactly one booking and one "shipped" e-mail,
    and its history names the person."""
    [order] = dead_bookings(stack, 1)
    stack.user("sam", "support")
    log_in(page, "sam", PASSWORD)
    page.get_by_role("link", name="Dead letters", exact=True).click()
    groups = page.locator("#groups")
    expect(groups).to_contain_text("book · permanent")
    check_page(page, "dead-letters-inbox")
    groups.get_by_role("link").first.click()
    expect(page.locator("#group-count")).to_have_text("1")
    check_page(page, "dead-letters-group")
    page.locator("#letters").get_by_role("link", name=re.compile(r"^book #")).click()
    expect(page.locator("#attempts")).to_contain_text("422")
    expect(page.locator("#attempts")).to_contain_text("unknown country")
    check_page(page, "dead-letter")

    page.get_by_label("Country code").fill("1X")
    page.get_by_role("button", name="Save address and redrive").click()
    expect(page.get_by_role("alert")).to_contain_text("two-letter country code")
    page.get_by_label("Country code").fill("GB")
    page.get_by_role("button", name="Save address and redrive").click()
    expect(page.get_by_role("status")).to_contain_text("Address corrected")
    expect(page.locator("#reference")).to_have_text(str(order["reference"]))
    expect(page.locator("#status")).to_have_text("delivered", timeout=30_000)
    expect(page.locator("#history")).to_contain_text("address corrected by user:sam")
    expect(page.locator("#history")).to_contain_text("sent round again by user:sam")
    expect(page.locator("#verdict")).to_contain_text("History verified ✓")
    check_page(page, "order-delivered")
    assert stack.outside.carrier_stats()["bookings_by_reference"] == {order["reference"]: 1}
    email = stack.order(int(str(order["id"])))["ship_to"]["email"]

    def shipped() -> list[str]:
        return [m.subject for m in stack.mails_to(email) if "shipped" in m.subject.lower()]

    wait_for(lambda: bool(shipped()))
    time.sleep(1.0)  # a duplicate would come right after the first
    assert len(shipped()) == 1, [m.subject for m in stack.mails_to(email)]


def test_a_group_redrive_shows_the_dry_run_count_then_its_progress(
    stack: Stack, page: Page, working: None
) -> None:
    """Three refused bookings: the confirm page says 3 would go round again; confirming opens
    the progress page, which follows the redrive to "finished", 3 of 3."""
    dead_bookings(stack, 3)
    stack.user("sam", "support")
    log_in(page, "sam", PASSWORD)
    page.goto("/console/dead-letters")
    page.locator("#groups").get_by_role("link").first.click()
    page.get_by_role("link", name="Redrive this group…").click()
    expect(page.locator("#would-redrive")).to_contain_text("3 dead letters would go round again")
    check_page(page, "dead-letters-redrive-confirm")
    assert stack.api.get("/dead-letters").json()["total"] == 3  # a dry run redrives nothing
    page.get_by_role("button", name="Redrive 3 dead letters").click()
    expect(page).to_have_url(re.compile(r"/console/dead-letters/redrives/\d+$"))
    expect(page.locator("#redrive-status")).to_have_text("finished", timeout=20_000)
    expect(page.locator("#redriven")).to_have_text("3")
    expect(page.locator("#redrive-total")).to_have_text("3")
    check_page(page, "dead-letters-progress")


def test_orders_are_found_by_name_email_reference_and_status(stack: Stack, page: Page) -> None:
    """The search form narrows the list by customer name, e-mail, reference and status, and
    each row says in words what the order waits for."""
    ada = stack.customer()
    grace = stack.api.post(
        "/customers",
        json={
            "name": "Grace Hopper",
            "email": "grace@navy.example",
            "address": {
                "line1": "1 Pier",
                "city": "Arlington",
                "postcode": "22201",
                "country": "US",
            },
            "payment_method": "pm_ok_visa",
        },
    ).json()["id"]
    stack.product("WIDGET", stock=10)
    first = stack.place(ada, [("WIDGET", 1)])
    second = stack.place(grace, [("WIDGET", 2)])
    stack.user("vera", "viewer")
    log_in(page, "vera", PASSWORD)
    rows = page.locator("#orders tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first.locator(".waiting")).to_contain_text("waiting for the payment at Paydesk")
    check_page(page, "orders")

    def search(text: str, status: str = "") -> None:
        page.get_by_label("Reference, customer name or e-mail").fill(text)
        page.get_by_label("Status").select_option(status)
        page.get_by_role("button", name="Search").click()

    search("grace")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(second["reference"])
    search("navy.example")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Grace Hopper")
    search(first["reference"])
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Ada Lovelace")
    search("", "delivered")
    expect(page.locator("#orders-list")).to_contain_text("No order matches this search")
    search("", "placed")
    expect(rows).to_have_count(2)
    page.get_by_label("Placed from").fill("2026-11-28")
    page.get_by_label("Placed to").fill("2026-11-01")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("alert")).to_contain_text("after “To”")
    check_page(page, "orders-search-error")


def test_the_dispute_bundle_downloaded_from_the_order_page_verifies(
    stack: Stack, page: Page, tmp_path: Path
) -> None:
    """Support downloads the bundle from the order page; the standalone verifier accepts it."""
    customer = stack.customer()
    stack.product("WIDGET", stock=5)
    order = stack.place(customer, [("WIDGET", 1)])
    stack.work_until_status(order["id"], "delivered")
    stack.user("sam", "support")
    log_in(page, "sam", PASSWORD)
    page.goto(f"/console/orders/{order['reference']}")
    expect(page.locator("#waiting")).to_contain_text("Finished")
    expect(page.locator("#open-work")).to_contain_text("Nothing open")
    check_page(page, "order")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download dispute bundle").click()
    assert download.value.suggested_filename == f"{order['reference']}.dispute.json"
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    checked = subprocess.run(
        [sys.executable, verify_bundle.__file__, str(saved)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_discard_proposed_in_one_browser_is_approved_in_another(
    stack: Stack, browser: Browser, working: None
) -> None:
    """Alice proposes discarding a dead letter with a reason; she is offered no approval; Bob,
    in his own browser, approves from the inbox; the order takes its failure path."""
    [order] = dead_bookings(stack, 1)
    stack.user("alice")
    stack.user("bob")
    letter = stack.api.get("/dead-letters").json()["data"][0]["id"]
    with new_page(browser, stack.server.url) as alice, new_page(browser, stack.server.url) as bob:
        for p in (alice, bob):
            p.on("dialog", lambda d: d.accept())
        log_in(alice, "alice", PASSWORD)
        alice.goto(f"/console/dead-letters/{letter}")
        alice.get_by_label("Reason to discard").fill("customer moved abroad, refund instead")
        alice.get_by_role("button", name="Propose discard").click()
        expect(alice.get_by_role("status")).to_contain_text("another admin must approve")
        expect(alice.get_by_role("button", name="Approve discard")).to_have_count(0)
        check_page(alice, "dead-letter-discard-proposed")

        log_in(bob, "bob", PASSWORD)
        bob.goto("/console/dead-letters")
        expect(bob.locator("#proposals")).to_contain_text("customer moved abroad")
        check_page(bob, "dead-letters-inbox-proposal")
        bob.locator("#proposals").get_by_role("button", name="Approve").click()
        expect(bob.get_by_role("status")).to_contain_text("Approved")
        bob.goto(f"/console/orders/{order['id']}")
        expect(bob.locator("#status")).to_have_text("cancelled")
        expect(bob.locator("#history")).to_contain_text("given up by user:bob")
