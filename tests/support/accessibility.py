"""Accessibility checks with axe-core (bundled by axe-playwright-python: no CDN) and screenshots
of each checked page, kept under tests/artifacts/console/ (git-ignored) to be looked at."""

from __future__ import annotations

from pathlib import Path

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "console"
_axe = Axe()


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def violations(page: Page) -> list[str]:
    """axe-core's violations on the page as it is now: "rule (impact): target …" lines."""
    results = _axe.run(page)
    found = []
    for violation in results.response.get("violations", []):
        targets = [str(node.get("target")) for node in violation.get("nodes", [])][:5]
        found.append(f"{violation['id']} ({violation.get('impact')}): {' '.join(targets)}")
    return found


def check_page(page: Page, name: str) -> None:
    """Screenshot the page, then fail with axe-core's findings if it has any."""
    path = screenshot(page, name)
    found = violations(page)
    assert not found, f"accessibility violations on {name} ({path}):\n" + "\n".join(found)
