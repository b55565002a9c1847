"""Accessibility checks of console pages with axe-core (bundled by axe-playwright-python), and
a screenshot of each page checked, kept as a test artifact under test-artifacts/ (gitignored)."""

from __future__ import annotations

import os
from pathlib import Path

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page

ARTIFACTS = Path(os.environ.get("ORDERFLOW_TEST_ARTIFACTS", "test-artifacts")) / "console"
# WCAG 2.1 A and AA, and axe's best practices (landmarks, headings, labels).
RULES = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21aa", "best-practice"]}}

_axe = Axe()


def check_page(page: Page, name: str) -> None:
    """Screenshot the page as `name`.png, then fail with axe's report if it finds violations."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    results = _axe.run(page, options={**RULES, "resultTypes": ["violations"]})
    assert results.violations_count == 0, f"axe on {name} ({page.url}):\n" + (
        results.generate_report()
    )
