"""The console's live updates in real headless Chromium (a whole stack on PostgreSQL): a region
holding an open <details> is left alone while the others are refreshed, and the scroll position
stays where the reader left it."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import Browser, Page

from tests.support.browser import log_in, new_page
from tests.support.stack import PASSWORD, start_stack

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(90),
    pytest.mark.parametrize(
        "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
    ),
]

MARK = "document.getElementById(%r).dataset.marked = 'yes'"
MARKED = "document.getElementById(%r).dataset.marked === 'yes'"
BLUR = "document.activeElement && document.activeElement.blur()"
SWAPPED = "document.getElementById(%r).dataset.marked !== 'yes'"


def until(page: Page, expression: str, timeout: float = 15.0) -> None:
    """Poll a JavaScript expression until it is true (the console's CSP forbids the string
    evaluation that `wait_for_function` uses)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"never true: {expression}"
        page.wait_for_timeout(100)


def swapped(page: Page, region: str) -> None:
    """Wait until the live update has replaced `region` (the marked element is gone)."""
    until(page, SWAPPED % region)


def test_a_live_update_keeps_an_open_details_open_and_the_scroll_position(
    database_url: str, browser: Browser
) -> None:
    """On the home page, with the charts' table opened and the page scrolled: a new order is
    counted by the next updates, yet the charts region (which holds the open <details>) is not
    replaced and the page does not jump; once the reader closes it, it is brought up to date."""
    with (
        start_stack(database_url, console_counts_seconds=0) as stack,
        new_page(browser, stack.server.url) as page,
    ):
        stack.user("vera", "viewer")
        page.set_viewport_size({"width": 1000, "height": 500})
        log_in(page, "vera", PASSWORD)
        page.goto("/console/")
        table = page.locator("#flow-table")
        table.locator("summary").click()
        page.evaluate(BLUR)  # only the open <details> may hold the region, not the focus
        assert table.get_attribute("open") is not None
        page.evaluate("window.scrollTo(0, 400)")
        y = page.evaluate("window.scrollY")
        assert y > 0
        for region in ("charts", "orders-by-status"):
            page.evaluate(MARK % region)

        stack.product("WIDGET", stock=5)
        stack.place(stack.customer(), [("WIDGET", 1)])  # no worker: it stays placed
        swapped(page, "orders-by-status")
        until(page, "document.querySelector('[data-status-count=placed]')?.textContent === '1'")
        page.wait_for_timeout(2_500)  # one more update, had the charts been replaceable

        assert page.evaluate(MARKED % "charts"), "the region with the open <details> was replaced"
        assert table.get_attribute("open") is not None
        assert page.evaluate("window.scrollY") == y

        table.locator("summary").click()  # closed: nothing holds the region back any more
        page.evaluate(BLUR)
        swapped(page, "charts")
