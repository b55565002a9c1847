"""The console's orders search and order page over real HTTP, on SQLite and PostgreSQL: search
by reference, name, e-mail, status and date; bad dates; waiting in words; the history in plain
language with its integrity verdict; the dispute bundle download; unknown orders."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta

import pytest
from sqlalchemy import update

from orderflow.audit.models import AuditEntry
from orderflow.audit.verify_bundle import verify_bundle
from orderflow.dependencies import health
from orderflow.dependencies.models import Dependency
from tests.integration.test_audit_tamper import tampering
from tests.support.console import log_in
from tests.support.stack import Stack


def _references(html: str) -> list[str]:
    return re.findall(r'class="mono" href="/console/orders/\d+">(ORD-\d+)<', html)


def test_search_by_reference_name_email_status_and_date(stack: Stack) -> None:
    """Each criterion narrows the list to the orders that match it, and only those."""
    ada = stack.customer()
    grace = stack.api.post(
        "/customers",
        json={
            "name": "Grace Hopper",
            "email": "grace@navy.example",
            "address": {
                "line1": "1 Pier",
                "city": "Arlington",
                "postcode": "22201",
                "country": "US",
            },
            "payment_method": "pm_ok_visa",
        },
    ).json()["id"]
    stack.product("WIDGET", stock=20)
    second = stack.place(grace, [("WIDGET", 1)])
    stack.work_until_status(second["id"], "paid", "scheduled", "shipped", "delivered")
    first = stack.place(ada, [("WIDGET", 1)])  # placed, not worked: stays "placed"
    stack.user("vera", "viewer")
    console = log_in(stack, "vera")
    today = date.today().isoformat()

    def found(query: str) -> list[str]:
        answer = console.page(f"/console/orders?{query}")
        assert answer.status_code == 200, answer.text
        return _references(answer.text)

    assert found(f"q={first['reference']}") == [first["reference"]]
    assert found(f"q={first['reference'].lower()}") == [first["reference"]]
    assert found("q=grace+hop") == [second["reference"]]
    assert found("q=NAVY.EXAMPLE") == [second["reference"]]
    assert found("q=lovelace") == [first["reference"]]
    assert found("status=placed") == [first["reference"]]
    assert found(f"from={today}&to={today}") == [first["reference"], second["reference"]]
    tomorrow = (date.today() + timedelta(days=1)).isoformat()
    assert found(f"from={tomorrow}") == []
    assert found("q=100%25_") == []  # LIKE wildcards are matched literally


def test_bad_search_input_is_a_clear_422_and_pages_keep_the_search(stack: Stack) -> None:
    """A date that is not one, or from after to, is a 422 saying so; the Older link keeps the
    criteria (keyset pagination); a cursor that is not an id is ignored, not a 500."""
    customer = stack.customer()
    stack.product("WIDGET", stock=80)
    for _ in range(52):
        stack.place(customer, [("WIDGET", 1)])
    stack.user("alice")
    console = log_in(stack, "alice")
    bad = console.page("/console/orders?from=28/11/2026")
    assert bad.status_code == 422 and "From must be a date like 2026-11-28" in bad.text
    backwards = console.page("/console/orders?from=2026-11-28&to=2026-11-01")
    assert backwards.status_code == 422 and "after “To”" in backwards.text
    listed = console.page("/console/orders?q=ada&status=placed")
    assert len(_references(listed.text)) == 50
    older = re.search(
        r'href="(/console/orders\?q=ada&amp;status=placed&amp;before=\d+)"', listed.text
    )
    assert older, "no Older link keeping the search"
    rest = console.page(older.group(1).replace("&amp;", "&"))
    assert len(_references(rest.text)) == 2
    assert console.page("/console/orders?before=abc' OR 1=1").status_code == 200


def test_the_list_and_the_page_say_in_words_what_an_order_waits_for(stack: Stack) -> None:
    """With Paydesk's breaker open, the row and the order page say "waiting for Paydesk since
    …", not a growing "ago"; the page shows the history in words and "History verified ✓"."""
    customer = stack.customer()
    stack.product("WIDGET", stock=5)
    order = stack.place(customer, [("WIDGET", 1)])
    with stack.db.transaction() as session:
        health.ensure(session, ["paydesk"])
        session.execute(
            update(Dependency).where(Dependency.name == "paydesk").values(state=health.OPEN)
        )
    stack.user("alice")
    console = log_in(stack, "alice")
    listed = console.page("/console/orders").text
    assert "waiting for Paydesk since" in listed
    page = console.page(f"/console/orders/{order['reference']}")
    assert page.status_code == 200
    assert "<strong>Now:</strong> waiting for Paydesk since" in page.text
    assert "History verified ✓" in page.text
    assert "order placed by admin:api: 1 x WIDGET, total £12.99" in page.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # not about the database
def test_a_tampered_history_is_named_on_the_page(stack: Stack) -> None:
    """An entry changed in the database turns the verdict into the precise problem."""
    customer = stack.customer()
    stack.product("WIDGET", stock=5)
    order = stack.place(customer, [("WIDGET", 1)])
    stack.work_until_status(order["id"], "paid", "scheduled", "shipped", "delivered")
    stack.user("alice")
    with tampering(stack.db) as conn:
        conn.execute(
            update(AuditEntry)
            .where(AuditEntry.order_id == order["id"], AuditEntry.seq == 2)
            .values(actor="someone:else")
        )
    page = log_in(stack, "alice").page(f"/console/orders/{order['id']}").text
    assert "History verified" not in page
    assert "History NOT verified ✗" in page
    assert "entry 2 (" in page and "was altered after it was written" in page


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # not about the database
def test_dispute_bundle_downloads_and_verifies_offline(stack: Stack) -> None:
    """Support downloads the bundle as a JSON attachment that the offline verifier accepts; a
    viewer is refused (403) and sees no button; an unknown order is a 404 page."""
    customer = stack.customer()
    stack.product("WIDGET", stock=5)
    order = stack.place(customer, [("WIDGET", 1)])
    stack.work_until_status(order["id"], "delivered")
    stack.user("sam", "support")
    stack.user("vera", "viewer")
    sam = log_in(stack, "sam")
    assert "Download dispute bundle" in sam.page(f"/console/orders/{order['id']}").text
    answer = sam.page(f"/console/orders/{order['id']}/dispute-bundle")
    assert answer.status_code == 200
    assert f'filename="{order["reference"]}.dispute.json"' in answer.headers["content-disposition"]
    assert verify_bundle(json.loads(answer.text)) == []
    vera = log_in(stack, "vera")
    assert "Download dispute bundle" not in vera.page(f"/console/orders/{order['id']}").text
    assert vera.page(f"/console/orders/{order['id']}/dispute-bundle").status_code == 403
    for path in ("/console/orders/ORD-999999", "/console/orders/ORD-999999/dispute-bundle"):
        missing = sam.page(path)
        assert missing.status_code == 404 and "There is no order" in missing.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # not about the database
def test_a_cancelled_order_shows_no_open_work(stack: Stack) -> None:
    """Cancelled before payment: the page says it has reached its end; what is left is shown
    as clean-up (the charge called off, the e-mail), not as something the order waits for;
    once the worker has run, nothing is open; no cancel button any more."""
    customer = stack.customer()
    stack.product("WIDGET", stock=5)
    order = stack.place(customer, [("WIDGET", 1)])
    assert (
        stack.api.post(f"/orders/{order['id']}/cancel", json={"reason": "test"}).status_code == 200
    )
    stack.user("alice")
    page = log_in(stack, "alice").page(f"/console/orders/{order['id']}").text
    assert "<strong>Finished:</strong> this order has reached its end (cancelled)" in page
    assert "Clean-up after the end" in page and "calling off the payment" in page
    assert "waiting for the payment" not in page and 'id="cancel-form"' not in page
    assert "calling off the payment" in log_in(stack, "alice").page("/console/orders").text

    def settled() -> bool:
        return not [w for w in stack.order(order["id"])["work"] if w["status"] == "ready"]

    stack.work_until(settled)
    page = log_in(stack, "alice").page(f"/console/orders/{order['id']}").text
    assert "this order has reached its end (cancelled); nothing is open" in page
    assert "Nothing open: this order has reached its end." in page
