"""The admin console in real headless Chromium, against a whole stack on SQLite."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import log_in, new_page
from tests.support.stack import PASSWORD, Stack

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(60),
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    with new_page(browser, stack.server.url) as p:
        yield p


def test_admin_places_an_order_and_follows_it_to_delivery(
    stack: Stack, page: Page, working: None
) -> None:
    """Log in, place an order by form, watch it reach delivered, find its e-mail and list row;
    the history names the person; after logging out the console asks for a login again."""
    customer = stack.customer()
    stack.product("WIDGET", stock=10, price=1299)
    stack.user("alice", "admin")

    page.goto("/console/orders")
    expect(page).to_have_url(re.compile(r"/console/login"))
    log_in(page, "alice", "not the password")
    expect(page.get_by_role("alert")).to_contain_text("do not match")
    log_in(page, "alice", PASSWORD)
    expect(page).to_have_url(re.compile(r"/console/orders$"))
    expect(page.locator("#whoami")).to_have_text("alice · admin")

    page.get_by_role("link", name="Place an order").click()
    page.get_by_label("Customer").select_option(str(customer))
    page.get_by_label("Product, line 1").select_option("WIDGET")
    page.get_by_label("Quantity, line 1").fill("2")
    page.get_by_role("button", name="Place order").click()

    expect(page).to_have_url(re.compile(r"/console/orders/\d+"))
    reference = page.locator("#reference").inner_text()
    assert re.fullmatch(r"ORD-\d{6}", reference)
    expect(page.locator("#total")).to_have_text("£25.98")
    expect(page.locator("#status")).to_have_text("delivered", timeout=25_000)  # auto-refresh
    expect(page.locator("#notifications")).to_contain_text("shipped")
    expect(page.locator("#history")).to_contain_text("by user:alice")

    page.get_by_role("link", name="Mailbox", exact=True).click()
    subject = page.locator("#mailbox .subject", has_text=reference)
    expect(subject).to_have_count(1)
    expect(subject).to_contain_text("shipped")

    page.get_by_role("link", name="Orders", exact=True).click()
    row = page.locator("#orders tbody tr", has=page.get_by_role("link", name=reference))
    expect(row.locator(".badge")).to_have_text("delivered")
    expect(row).to_contain_text("Ada Lovelace")
    expect(row).to_contain_text("£25.98")

    page.get_by_role("button", name="Log out").click()
    page.goto("/console/orders")
    expect(page).to_have_url(re.compile(r"/console/login"))


def test_ordering_more_than_the_stock_shows_the_error_and_places_nothing(
    stack: Stack, page: Page
) -> None:
    """More than the stock re-renders the form with a 409 and the stock error; no order exists."""
    customer = stack.customer()
    stack.product("GADGET", stock=1)

    stack.user("alice", "admin")
    page.goto("/console/login?token=test-token")  # the old link: no longer logs in
    expect(page.get_by_role("status")).to_contain_text("no longer log in")
    log_in(page, "alice", PASSWORD)
    expect(page).to_have_url(re.compile(r"/console/orders$"))
    page.goto("/console/orders/new")
    page.get_by_label("Customer").select_option(str(customer))
    page.get_by_label("Product, line 1").select_option("GADGET")
    page.get_by_label("Quantity, line 1").fill("5")
    with page.expect_response(re.compile(r"/console/orders/new$")) as answer:
        page.get_by_role("button", name="Place order").click()

    assert answer.value.status == 409
    expect(page.get_by_role("alert")).to_contain_text("Not enough stock of GADGET")
    expect(page.get_by_label("Customer")).to_have_value(str(customer))
    assert stack.api.get("/orders").json()["data"] == []
    assert stack.api.get("/products/GADGET").json()["stock"] == 1


def test_a_viewer_follows_an_order_but_sees_no_action_buttons(stack: Stack, page: Page) -> None:
    """A viewer logs in and reads the order (the refresh script runs under the CSP) but is
    offered no place-order, cancel or approve control."""
    customer = stack.customer()
    stack.product("WIDGET", stock=10)
    order = stack.place(customer, [("WIDGET", 1)])
    stack.user("vera", "viewer")
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    log_in(page, "vera", PASSWORD)
    expect(page).to_have_url(re.compile(r"/console/orders$"))
    expect(page.get_by_role("link", name="Place an order")).to_have_count(0)
    expect(page.get_by_role("link", name="Place order")).to_have_count(0)
    page.get_by_role("link", name=order["reference"]).click()
    expect(page.locator("#status")).to_have_text("placed")
    expect(page.locator("#cancel-form")).to_have_count(0)
    expect(page.get_by_role("button")).to_have_text(["Log out"])
    stack.work_until_status(order["id"], "paid", "scheduled")
    expect(page.locator("#status")).not_to_have_text("placed", timeout=10_000)  # auto-refresh
    assert not [e for e in errors if "Content Security Policy" in e], errors


def test_two_admins_cancel_a_charged_order_with_four_eyes(stack: Stack, browser: Browser) -> None:
    """Alice proposes cancelling a paid order (it refunds); she cannot approve it; Bob, in his
    own browser, approves; the order is cancelled and the history names both."""
    customer = stack.customer()
    stack.product("WIDGET", stock=10)
    order = stack.place(customer, [("WIDGET", 1)])
    stack.work_until_status(order["id"], "paid", "scheduled")
    stack.user("alice", "admin")
    stack.user("bob", "admin")
    with new_page(browser, stack.server.url) as alice, new_page(browser, stack.server.url) as bob:
        alice.on("dialog", lambda d: d.accept())
        log_in(alice, "alice", PASSWORD)
        alice.goto(f"/console/orders/{order['id']}")
        alice.get_by_role("button", name="Propose cancellation and refund").click()
        expect(alice.get_by_role("status")).to_contain_text("another admin must approve")
        expect(alice.locator("#proposals")).to_contain_text("proposed by user:alice")
        expect(alice.locator("#proposals").get_by_role("button", name="Approve")).to_have_count(0)

        log_in(bob, "bob", PASSWORD)
        bob.goto(f"/console/orders/{order['id']}")
        bob.locator("#proposals").get_by_role("button", name="Approve").click()
        expect(bob.get_by_role("status")).to_contain_text("Approved")
        expect(bob.locator("#status")).to_have_text("cancelled")
        expect(bob.locator("#history")).to_contain_text("by user:alice")
        expect(bob.locator("#history")).to_contain_text("four_eyes.approved")
        expect(bob.locator("#proposals")).to_have_count(0)
