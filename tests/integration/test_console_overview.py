"""The console's overview pages over real HTTP on SQLite and PostgreSQL: the home page's counts
and charts, the dependencies page and the outage banner, the incidents page."""

from __future__ import annotations

import re

from tests.support.console import log_in
from tests.support.stack import Stack


def test_home_shows_counts_grouped_by_the_database_and_three_charts(stack: Stack) -> None:
    """Orders by status match the API's orders; the charts are inline SVG with a text name."""
    stack.user("vera", "viewer")
    stack.product("WIDGET", stock=10)
    customer = stack.customer()
    for _ in range(3):
        stack.place(customer, [("WIDGET", 1)])
    console = log_in(stack, "vera")
    page = console.page("/console")
    assert page.status_code == 200, page.text
    placed = len(stack.api.get("/orders?status=placed").json()["data"])
    assert re.search(rf'data-status-count="placed">{placed}<', page.text)
    assert placed == 3
    for chart in ("chart-flow", "chart-bands"):
        assert f'<svg class="chart" id="{chart}"' in page.text
    assert "3 placed and 0 delivered" in page.text
    day = console.page("/console?span=day")
    assert day.status_code == 200 and "per 15 minutes" in day.text
    bad = console.page("/console?span=week")
    assert bad.status_code == 400 and "last hour or the last day" in bad.text
