"""The console's login and its defences over real HTTP, on SQLite and PostgreSQL: server-side
sessions, CSRF, Origin checks, CSP, Secure cookies, roles, hostile cookies."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select

from orderflow.orders.models import Order
from orderflow.people.models import ConsoleSession
from tests.support.console import log_in
from tests.support.stack import PASSWORD, Stack, start_stack


def _orders(stack: Stack) -> int:
    with stack.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(Order)) or 0)


def _order_form(stack: Stack) -> dict[str, str]:
    customer = stack.customer()
    stack.product("WIDGET", stock=10)
    return {"customer_id": str(customer), "sku": "WIDGET", "quantity": "1"}


def _to_login(answer: httpx.Response) -> bool:
    return answer.status_code == 303 and "/console/login" in answer.headers["location"]


def test_login_takes_a_user_name_and_password_not_a_token(stack: Stack) -> None:
    """A wrong password is 401; the old token link no longer logs in; the right one does."""
    stack.user("alice")
    url = stack.server.url
    origin = {"Origin": url}
    wrong = httpx.post(
        f"{url}/console/login", data={"name": "alice", "password": "nope"}, headers=origin
    )
    assert wrong.status_code == 401 and "do not match" in wrong.text
    unknown = httpx.post(
        f"{url}/console/login", data={"name": "nobody", "password": PASSWORD}, headers=origin
    )
    assert unknown.status_code == 401
    link = httpx.get(f"{url}/console/login?token=test-token")
    assert link.status_code == 200 and "orderflow_console" not in link.headers.get("set-cookie", "")
    console = log_in(stack, "alice")
    assert console.page("/console/orders").status_code == 200


def test_a_cross_origin_form_post_with_the_cookie_is_refused(stack: Stack) -> None:
    """A form posted from another site (or with no Origin and no Referer) is 403, even with a
    valid cookie and CSRF token; nothing is placed. The login form checks Origin too."""
    stack.user("alice")
    console = log_in(stack, "alice")
    form = _order_form(stack)
    evil = console.post("/console/orders/new", form, origin="https://evil.example")
    assert evil.status_code == 403 and "did not come from this console" in evil.text
    bare = console.post("/console/orders/new", form, origin=None)
    assert bare.status_code == 403
    referer = console.http.post(
        "/console/orders/new",
        data={**form, "csrf_token": console.csrf()},
        headers={"Referer": "https://evil.example/page"},
    )
    assert referer.status_code == 403
    assert _orders(stack) == 0
    login = httpx.post(
        f"{stack.server.url}/console/login",
        data={"name": "alice", "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert login.status_code == 403
    ours = console.post("/console/orders/new", form)
    assert ours.status_code == 303 and _orders(stack) == 1


def test_a_form_post_without_the_sessions_csrf_token_is_refused(stack: Stack) -> None:
    """Same origin but no CSRF token, or another session's, is 403; logout needs it too."""
    stack.user("alice")
    stack.user("bob")
    alice, bob = log_in(stack, "alice"), log_in(stack, "bob")
    form = _order_form(stack)
    assert alice.post("/console/orders/new", form, csrf=False).status_code == 403
    foreign = {**form, "csrf_token": bob.csrf()}
    assert alice.post("/console/orders/new", foreign, csrf=False).status_code == 403
    assert alice.post("/console/logout", {}, csrf=False).status_code == 403
    assert _orders(stack) == 0
    assert alice.page("/console/orders").status_code == 200  # still logged in


def test_logout_ends_the_session_server_side(stack: Stack) -> None:
    """After logout the old cookie, sent again, no longer works: its row is gone."""
    stack.user("alice")
    console = log_in(stack, "alice")
    old = console.cookie
    assert console.post("/console/logout", {}).status_code == 303
    replay = httpx.get(f"{stack.server.url}/console/orders", cookies={"orderflow_console": old})
    assert _to_login(replay)
    with stack.db.read() as session:
        assert session.scalars(select(ConsoleSession)).all() == []


@pytest.fixture
def short_sessions(database_url: str) -> Iterator[Stack]:
    with start_stack(database_url, console_session_idle_seconds=1.5) as s:
        yield s


def test_an_idle_session_expires(short_sessions: Stack) -> None:
    """A session unused for longer than ORDERFLOW_CONSOLE_SESSION_IDLE_SECONDS ends; use
    within it keeps it alive; the next login removes the dead row."""
    stack = short_sessions
    stack.user("alice")
    console = log_in(stack, "alice")
    for _ in range(3):
        time.sleep(0.7)
        assert console.page("/console/orders").status_code == 200
    time.sleep(2.0)
    assert _to_login(console.page("/console/orders"))
    log_in(stack, "alice")  # a login sweeps the sessions that ended by themselves
    with stack.db.read() as session:
        assert len(session.scalars(select(ConsoleSession)).all()) == 1


def test_console_pages_carry_a_csp_whose_nonce_every_script_has(stack: Stack) -> None:
    """Content-Security-Policy with a fresh nonce on each page; every <script> carries it; no
    <style> and no inline handlers or style attributes are left for the CSP to block; the
    style sheet is a file of our own origin."""
    stack.user("alice")
    console = log_in(stack, "alice")
    nonces = set()
    for path in ("/console/orders", "/console/orders/new", "/console/mailbox"):
        page = console.page(path)
        csp = page.headers["content-security-policy"]
        nonce = re.search(r"script-src 'nonce-([^']+)'", csp)
        assert nonce, csp
        assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert "style-src 'self'" in csp and "<style" not in page.text
        tags = re.findall(r"<(script|style)\b([^>]*)>", page.text)
        assert tags and all(f'nonce="{nonce.group(1)}"' in attrs for _, attrs in tags)
        assert not re.search(r"\s(on[a-z]+|style)=", page.text)
        nonces.add(nonce.group(1))
    assert len(nonces) == 3
    login = httpx.get(f"{stack.server.url}/console/login")
    assert "content-security-policy" in login.headers
    sheet = httpx.get(f"{stack.server.url}/console/static/console.css")
    assert sheet.status_code == 200 and sheet.headers["content-type"].startswith("text/css")


def test_the_cookie_is_not_secure_over_plain_http_by_default(stack: Stack) -> None:
    """Plain http, nothing configured: HttpOnly, SameSite=Strict, no Secure (it would be lost)."""
    stack.user("alice")
    answer = httpx.post(
        f"{stack.server.url}/console/login",
        data={"name": "alice", "password": PASSWORD},
        headers={"Origin": stack.server.url},
    )
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("setting", "headers"),
    [
        ({"secure_cookies": True}, {}),
        ({"trust_proxy_headers": True}, {"X-Forwarded-Proto": "https"}),
    ],
)
def test_the_cookie_is_secure_when_configured_for_tls(
    database_url: str, setting: dict[str, bool], headers: dict[str, str]
) -> None:
    """ORDERFLOW_SECURE_COOKIES, or a trusted proxy's X-Forwarded-Proto: https, make it Secure
    (and the proxy's origin is the one forms must come from)."""
    with start_stack(database_url, **setting) as stack:
        stack.user("alice")
        url = stack.server.url
        origin = url.replace("http://", "https://") if headers else url
        answer = httpx.post(
            f"{url}/console/login",
            data={"name": "alice", "password": PASSWORD},
            headers={"Origin": origin, **headers},
        )
        assert answer.status_code == 303, answer.text
        assert "secure" in answer.headers["set-cookie"].lower()


def test_a_non_ascii_cookie_goes_to_the_login_page(stack: Stack) -> None:
    """A cookie value with non-ASCII bytes is no session: the login page, never a 500."""
    for value in (f"{int(time.time())}.\u00e9\u00e9", "\u00e9" * 43, "x" * 5000):
        answer = httpx.get(
            f"{stack.server.url}/console/orders",
            headers={b"Cookie": f"orderflow_console={value}".encode("latin-1")},
        )
        assert _to_login(answer), (value[:10], answer.status_code)


def test_a_viewer_sees_no_action_buttons_and_may_not_post(stack: Stack) -> None:
    """A viewer's pages show no place/cancel/approve controls; the forms answer 403."""
    customer = stack.customer()
    stack.product("WIDGET", stock=10)
    order = stack.place(customer, [("WIDGET", 1)])
    stack.user("vera", "viewer")
    viewer = log_in(stack, "vera")
    page = viewer.page(f"/console/orders/{order['id']}")
    assert page.status_code == 200 and order["reference"] in page.text
    assert "cancel-form" not in page.text and "Place order" not in page.text
    assert "Place an order" not in viewer.page("/console/orders").text
    assert viewer.page("/console/orders/new").status_code == 403
    refused = viewer.post(f"/console/orders/{order['id']}/cancel", {"reason": "x"})
    assert refused.status_code == 403 and "viewer" in refused.text
    assert stack.order(order["id"])["status"] == "placed"


def test_console_cancel_of_a_charged_order_is_a_proposal_another_admin_approves(
    stack: Stack,
) -> None:
    """In the console a refund is proposed, the proposer cannot approve it, a second admin
    does, and the order is cancelled with both names in its history."""
    customer = stack.customer()
    stack.product("WIDGET", stock=10)
    order = stack.place(customer, [("WIDGET", 1)])
    stack.work_until_status(order["id"], "paid", "scheduled")
    stack.user("alice")
    stack.user("bob")
    alice, bob = log_in(stack, "alice"), log_in(stack, "bob")
    path = f"/console/orders/{order['id']}"
    proposed = alice.post(f"{path}/cancel", {"reason": "damaged"})
    assert proposed.status_code == 303 and "notice=proposed" in proposed.headers["location"]
    assert stack.order(order["id"])["status"] in ("paid", "scheduled")
    [pending] = stack.api.get("/proposals").json()["data"]
    assert "Approve" not in alice.page(path).text
    own = alice.post(f"{path}/proposals/{pending['id']}/approve", {})
    assert own.status_code == 403
    approved = bob.post(f"{path}/proposals/{pending['id']}/approve", {})
    assert approved.status_code == 303, approved.text
    view = stack.order(order["id"])
    assert view["status"] == "cancelled"
    actors = [(h["action"], h["actor"]) for h in view["history"]]
    assert ("four_eyes.proposed", "user:alice") in actors
    assert ("four_eyes.approved", "user:bob") in actors
