"""The console's overview pages in real headless Chromium against real `serve` and a worker on
PostgreSQL: the outage banner comes and goes by itself, the home page's counts match the API,
a live update leaves the focused text field alone; every page passes axe-core."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from orderflow.db import Database
from orderflow.orders.status import OrderStatus
from orderflow.people import service as people
from tests.support.accessibility import check_page
from tests.support.browser import log_in, new_page
from tests.support.processes import FAST_KNOBS, E2EStack, ProcessGroup, e2e_stack, wait_until
from tests.support.stack import PASSWORD, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(120)]


@pytest.fixture
def stack(processes: ProcessGroup, own_pg_url: str) -> Iterator[E2EStack]:
    knobs = {
        **FAST_KNOBS,
        "ORDERFLOW_BREAKER_FAILURE_THRESHOLD": "2",
        "ORDERFLOW_BREAKER_PROBE_SECONDS": "1",
        "ORDERFLOW_BACKLOG_SAMPLE_SECONDS": "1",
        "ORDERFLOW_ALERT_CHECK_SECONDS": "0.5",
        "ORDERFLOW_ALERT_DEPENDENCY_DOWN_SECONDS": "1",
        "ORDERFLOW_CONSOLE_COUNTS_SECONDS": "1",
    }
    with e2e_stack(processes, own_pg_url, knobs) as s:
        s.start_outside_and_serve(progress_seconds=0.1)
        s.start_worker("w1")
        db = Database(own_pg_url, pool_size=0)
        with db.transaction() as session:
            people.add_user(session, "alice", "admin", PASSWORD, actor="test")
        db.dispose()
        yield s


@pytest.fixture
def page(browser: Browser, stack: E2EStack) -> Iterator[Page]:
    with new_page(browser, stack.api_url) as p:
        yield p


def _count_by_status(stack: E2EStack, status: str) -> int:
    return len(stack.api("GET", f"/orders?status={status}&limit=500").json()["data"])


def test_outage_banner_comes_and_goes_live_and_counts_match_the_api(
    stack: E2EStack, page: Page
) -> None:
    """Home counts equal the API's; while Bob's Post is down every page carries the banner (it
    appears and clears without a reload); typing in a field survives the live updates."""
    stack.create_product("WIDGET", stock=50)
    customer = stack.create_customer(1)
    orders = [stack.place(customer, [("WIDGET", 1)], key=f"before-{i}") for i in range(3)]
    wait_until(
        lambda: all(stack.order(o["id"])["status"] == "delivered" for o in orders),
        timeout=60,
        what="the first orders are delivered",
    )
    page.goto("/console")
    log_in(page, "alice", PASSWORD)
    expect(page).to_have_url(re.compile(r"/console$"))
    for status in OrderStatus:
        expected = str(_count_by_status(stack, status.value))
        expect(page.locator(f'[data-status-count="{status.value}"]')).to_have_text(expected)
    expect(page.locator("#chart-flow")).to_be_visible()
    check_page(page, "home-hour")

    # Typing in a field while the counts change: the field keeps focus and text.
    field = page.get_by_label("Go to order")
    field.click()
    field.type("ORD-00")
    stack.place(customer, [("WIDGET", 1)], key="while-typing")
    expect(page.locator('[data-status-count="placed"], [data-status-count="paid"]').first)
    wait_until(
        lambda: (
            page.locator("#orders-by-status").inner_text().count("4") > 0
            or sum(
                int(t.replace(",", ""))
                for t in page.locator("[data-status-count]").all_inner_texts()
            )
            == 4
        ),
        timeout=20,
        what="the counts region updates live",
    )
    expect(field).to_be_focused()
    expect(field).to_have_value("ORD-00")

    # Bob's Post goes down: the banner appears by itself, on this page and the others.
    stack.carrier_switches(outage="503")
    waiting = stack.place(customer, [("WIDGET", 1)], key="during-outage")
    banner = page.locator("#banner .banner")
    expect(banner).to_contain_text("Bob's Post down since", timeout=30_000)
    expect(banner).to_contain_text(re.compile(r"\d+ orders? waiting, next probe"))
    expect(field).to_have_value("ORD-00")
    page.goto("/console/dependencies")
    expect(page.locator("#dep-bobs_post [data-state]")).to_have_text("down")
    expect(page.locator("#dep-bobs_post")).to_contain_text("503")
    check_page(page, "dependencies-outage")
    page.goto("/console/incidents")
    expect(page.locator("#incident-list")).to_contain_text("Bob's Post is down", timeout=20_000)
    check_page(page, "incidents")
    page.goto(f"/console/orders/{waiting['id']}")
    expect(page.locator("#banner .banner")).to_contain_text("Bob's Post down")

    # Back up: the banner clears by itself, the order ships.
    page.goto("/console/dependencies")
    stack.carrier_switches(outage=None)
    expect(page.locator("#banner .banner")).to_have_count(0, timeout=30_000)
    expect(page.locator("#dep-bobs_post [data-state]")).to_have_text("up", timeout=10_000)
    expect(page.locator("#dep-bobs_post")).to_contain_text("came back")
    check_page(page, "dependencies-recovered")
    page.goto("/console?span=day")
    expect(page.locator("#chart-bands")).to_be_visible()
    check_page(page, "home-day")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_demo_switches_page_flips_bob_s_post_from_the_browser(
    browser: Browser, database_url: str
) -> None:
    """Under the demo an admin takes Bob's Post down and back up with buttons; the page passes
    axe-core."""
    with start_stack(database_url, demo=True) as stack, new_page(browser, stack.server.url) as page:
        stack.user("alice", "admin")
        page.goto("/console/demo")
        log_in(page, "alice", PASSWORD)
        expect(page.get_by_role("link", name="Demo", exact=True)).to_be_visible()
        page.get_by_role("button", name="Bob's Post: Down (503)").click()
        expect(page.get_by_role("status").filter(has_text="answers 503")).to_be_visible()
        expect(page.locator('[data-switch="outage"]').first).to_have_text("503")
        check_page(page, "demo")
        page.get_by_role("button", name="Bob's Post: Back up").click()
        expect(page.locator('[data-switch="outage"]').first).to_have_text("none")
