"""The console's overview pages over real HTTP on SQLite and PostgreSQL: the home page's counts
and charts, the dependencies page and the outage banner, the incidents page."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import select

from orderflow.alerts.incidents import DEVELOPERS, raise_condition, resolve
from orderflow.alerts.rules import parcel_failed
from orderflow.dependencies import health
from orderflow.dependencies.policy import DependencyPolicy
from orderflow.tasks import queue
from orderflow.tasks.models import Task
from tests.support.console import log_in
from tests.support.slack import SlackReceiver
from tests.support.stack import Stack, start_stack


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


def _carrier_down(stack: Stack) -> None:
    policy = DependencyPolicy(
        "bobs_post", failure_threshold=1, probe_seconds=300, rate_per_second=None
    )
    with stack.db.transaction() as session:
        health.ensure(session, ["bobs_post", "paydesk"])
        health.record_failure(session, policy, "Bob's Post: HTTP 503: service unavailable")


def _carrier_back(stack: Stack) -> None:
    with stack.db.transaction() as session:
        health.record_success(session, "bobs_post")


def test_an_outage_shows_on_every_page_and_on_the_dependencies_page(stack: Stack) -> None:
    """Bob's Post down: a banner with the orders waiting and the next probe on every page; the
    dependencies page says since when, the last error and the history; gone once it is back."""
    stack.user("vera", "viewer")
    stack.product("WIDGET", stock=10)
    customer = stack.customer()
    console = log_in(stack, "vera")
    assert "down</strong>" not in console.page("/console/orders").text
    _carrier_down(stack)
    order = stack.place(customer, [("WIDGET", 1)])
    with stack.db.transaction() as session:  # the order is paid: its booking waits for Bob's Post
        queue.enqueue(session, "book", f"{order['reference']}:book-test", order_id=order["id"])
    for path in ("/console", "/console/orders", "/console/mailbox", "/console/banner"):
        text = console.page(path).text
        assert "Bob&#39;s Post down</strong>" in text, path
        assert re.search(r"— 1 order waiting, next probe", text), path
    page = console.page("/console/dependencies").text
    assert 'data-state="down"' in page and "HTTP 503: service unavailable" in page
    assert "went down" in page
    _carrier_back(stack)
    assert "down</strong>" not in console.page("/console/orders").text
    page = console.page("/console/dependencies").text
    assert "came back" in page and 'data-state="down"' not in page


def test_incidents_page_says_what_was_sent_to_whom(database_url: str) -> None:
    """An outage incident and a lost parcel: the page lists both, each message with its
    recipient (Slack for developers, the logistics address) and whether it went out."""
    with (
        SlackReceiver() as slack,
        start_stack(
            database_url, slack_webhook_url=slack.url, logistics_email="logistics@shop.example"
        ) as stack,
    ):
        stack.user("vera", "viewer")
        with stack.db.transaction() as session:
            incident = raise_condition(
                session,
                "dependency_down:bobs_post",
                audience=DEVELOPERS,
                title="Bob's Post is down",
                text="Bob's Post has not answered since 02:13.",
            )
            parcel_failed(session, 12, "was lost")
            key = (incident.messages or [])[0]["task_key"]
        console = log_in(stack, "vera")
        page = console.page("/console/incidents").text
        assert "1 open · 1 resolved" in page
        assert "Bob&#39;s Post is down" in page and "Parcel for ORD-000012 was lost" in page
        assert "Slack (developers)" in page and "(logistics@shop.example)" in page
        assert "waiting to go out" in page
        stack.work_until(lambda: _task_status(stack, key) == "done")
        done = console.page("/console/incidents").text
        assert "sent</span>" in done and "logged, not sent" not in done
        assert slack.received("Bob's Post is down")


def _task_status(stack: Stack, key: str) -> str | None:
    with stack.db.read() as session:
        return session.scalar(select(Task.status).where(Task.key == key))


def test_demo_switches_flip_the_simulators_for_admins_only(database_url: str) -> None:
    """Under the demo, an admin's button turns into the simulator's PATCH (Bob's Post down,
    back up; Paydesk slow); a viewer is refused; without the demo the page does not exist."""
    with start_stack(database_url, demo=True) as stack:
        stack.user("alice", "admin")
        stack.user("vera", "viewer")
        admin = log_in(stack, "alice")
        answer = admin.post("/console/demo/carrier-503", {})
        assert answer.status_code == 303, answer.text
        page = admin.page("/console/demo?done=carrier-503").text
        assert "Bob&#39;s Post answers 503." in page and 'data-switch="outage">503<' in page
        assert admin.post("/console/demo/paydesk-slow", {}).status_code == 303
        assert admin.post("/console/demo/carrier-up", {}).status_code == 303
        page = admin.page("/console/demo").text
        assert 'data-switch="outage">none<' in page and "2.0 s" in page
        assert admin.post("/console/demo/no-such-switch", {}).status_code == 404
        viewer = log_in(stack, "vera")
        assert viewer.page("/console/demo").status_code == 403
        assert viewer.post("/console/demo/carrier-503", {}).status_code == 403
    with start_stack(database_url) as plain:
        assert log_in(plain, "alice").page("/console/demo").status_code == 404


def test_api_docs_are_served_from_the_package_with_no_outside_host(stack: Stack) -> None:
    """/docs names no other host (no CDN): its script, style sheet and icon are ours and served."""
    docs = httpx.get(f"{stack.server.url}/docs")
    assert docs.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", docs.text)
    assert urls and all(u.startswith("/") for u in urls), urls
    assert not re.search(r"https?://", docs.text)
    for url in urls:
        asset = httpx.get(f"{stack.server.url}{url}")
        assert asset.status_code == 200 and len(asset.content) > 500, url
    assert (
        "SwaggerUIBundle" in httpx.get(f"{stack.server.url}/docs/assets/swagger-ui-bundle.js").text
    )
    assert httpx.get(f"{stack.server.url}/docs/assets/../../etc/passwd").status_code == 404
    assert httpx.get(f"{stack.server.url}/redoc").status_code == 404


def test_incidents_come_in_pages_with_every_open_one_on_the_first(stack: Stack) -> None:
    """53 resolved incidents and one open: the first page has the open one and the 49 newest
    resolved, "Older" leads to the other 4; a cursor that cannot be an id is the first page."""
    stack.user("vera", "viewer")
    with stack.db.transaction() as session:
        for i in range(53):
            told = raise_condition(
                session, f"past:{i}", audience=DEVELOPERS, title=f"Past {i}", text="-"
            )
            resolve(session, told, "over")
        raise_condition(session, "now", audience=DEVELOPERS, title="Happening now", text="-")
    console = log_in(stack, "vera")
    first = console.page("/console/incidents").text
    shown = set(re.findall(r">Past (\d+)</h2>", first))
    assert "Happening now" in first and shown == {str(i) for i in range(4, 53)}
    older = re.search(r'href="/console/incidents\?before=(\d+)">Older', first)
    assert older is not None
    second = console.page(f"/console/incidents?before={older.group(1)}").text
    assert set(re.findall(r">Past (\d+)</h2>", second)) == {"0", "1", "2", "3"}
    assert "Happening now" not in second and "Older →" not in second
    assert console.page("/console/incidents?before=%C2%B2").text.count(">Past ") == 49
