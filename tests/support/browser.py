"""Headless Chromium for browser tests: the system's /usr/bin/chromium, driven by Playwright."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = os.environ.get("ORDERFLOW_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@contextmanager
def chromium() -> Iterator[Browser]:
    """One headless Chromium; fails the test with what to do when it is not installed."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"{CHROMIUM} not found: install it (apt-get install -y chromium), "
            "or deselect the browser tests with -m 'not browser'"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def new_page(browser: Browser, base_url: str) -> Iterator[Page]:
    """A fresh page in its own context (no cookies shared between tests)."""
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def log_in(page: Page, name: str, password: str) -> None:
    """Log in on the console's login page (the page may already be on it)."""
    if "/console/login" not in page.url:
        page.goto("/console/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
