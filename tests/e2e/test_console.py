"""The admin console in real headless Chromium, against a whole stack on SQLite."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import chromium, new_page
from tests.support.stack import Stack

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(60),
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    with new_page(browser, stack.server.url) as p:
        yield p


@pytest.fixture
def working(stack: Stack) -> Iterator[None]:
    """The stack's worker running in the background, as in production."""
    stop = threading.Event()
    thread = threading.Thread(target=stack.worker.run, args=(stop,), name="console-test-worker")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def test_admin_places_an_order_and_follows_it_to_delivery(
    stack: Stack, page: Page, working: None
) -> None:
    """Log in, place an order by form, watch it reach delivered, find its e-mail and list row."""
    customer = stack.customer()
    stack.product("WIDGET", stock=10, price=1299)

    page.goto("/console/orders")
    expect(page).to_have_url(re.compile(r"/console/login"))
    page.get_by_label("Admin token").fill("not-the-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("token is not right")
    page.get_by_label("Admin token").fill("test-token")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/console/orders$"))

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

    page.goto("/console/login?token=test-token")  # the link the demo prints
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
