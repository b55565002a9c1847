"""The console's dead-letter pages over real HTTP, on SQLite and PostgreSQL: groups counted by
the database, evidence, fix-then-redrive, a group redrive with its dry run, four-eyes discards,
roles, and bad input answered with clear 4xx pages."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from sqlalchemy import update

from orderflow.clock import now
from orderflow.deadletters.causes import fingerprint
from orderflow.tasks.models import Task
from tests.support.console import Console, log_in
from tests.support.stack import Stack


def _dead_bookings(stack: Stack, count: int) -> list[int]:
    """`count` orders whose booking the carrier refuses (country XX): dead letters."""
    customer = stack.customer(country="XX")
    stack.product("WIDGET", stock=50)
    orders = [stack.place(customer, [("WIDGET", 1)])["id"] for _ in range(count)]

    def dead() -> bool:
        return int(stack.api.get("/dead-letters", params={"step": "book"}).json()["total"]) >= count

    stack.work_until(dead)
    return orders


def _letter_of(stack: Stack, order_id: int) -> int:
    data = stack.api.get("/dead-letters").json()["data"]
    return next(int(d["id"]) for d in data if d["order_id"] == order_id)


def _cause(stack: Stack) -> str:
    return str(stack.api.get("/dead-letters").json()["groups"][0]["cause"])


def test_inbox_groups_by_cause_and_a_letter_shows_its_evidence(stack: Stack) -> None:
    """Two refused bookings make one group of 2 with oldest/newest; the group page lists both;
    a dead letter's page shows each attempt's HTTP status and error; a viewer gets no buttons."""
    orders = _dead_bookings(stack, 2)
    stack.user("vera", "viewer")
    console = log_in(stack, "vera")
    inbox = console.page("/console/dead-letters")
    assert inbox.status_code == 200
    assert re.search(r'<td class="num">2</td>', inbox.text)
    assert "book · permanent" in inbox.text
    group = console.page(f"/console/dead-letters?cause={quote(_cause(stack), safe='')}")
    assert group.status_code == 200 and 'id="group-count">2<' in group.text
    assert "Redrive this group" not in group.text
    letter = console.page(f"/console/dead-letters/{_letter_of(stack, orders[0])}")
    assert letter.status_code == 200
    assert re.search(r'<td class="num">422</td>', letter.text)
    assert "<button" not in letter.text.split("</header>", 1)[1]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # not about the database
def test_unknown_or_malformed_ids_and_causes_are_404_pages(stack: Stack) -> None:
    """Unknown ids, words for ids, a cause nobody has: 404 pages that say so, never a 500."""
    stack.user("alice")
    console = log_in(stack, "alice")
    for path in (
        "/console/dead-letters/999999",
        "/console/dead-letters/abc",
        "/console/dead-letters/99999999999999999999999",
        "/console/dead-letters/redrives/12345",
        "/console/dead-letters/groups/redrive?cause=" + "x" * 600,
    ):
        answer = console.page(path)
        assert answer.status_code == 404, (path, answer.status_code)
        assert "There is no" in answer.text or "No dead letter" in answer.text
    assert "<h1>Dead letters</h1>" in console.page("/console/dead-letters?cause=").text
    empty = console.page("/console/dead-letters?cause=nothing%20like%20this")
    assert empty.status_code == 200 and "No dead letter has this cause now" in empty.text
    refused = console.post("/console/dead-letters/424242/redrive", {})
    assert refused.status_code == 404


def test_support_fixes_the_address_and_the_booking_is_redriven(stack: Stack) -> None:
    """A bad country code is refused with a clear 422; a good address is saved and the booking
    redriven in one step; the history names the support user for both."""
    [order] = _dead_bookings(stack, 1)
    letter = _letter_of(stack, order)
    stack.user("sam", "support")
    console = log_in(stack, "sam")
    form = {"line1": "1 Main St", "line2": "", "city": "London", "postcode": "N1 1AA"}
    bad = console.post(f"/console/dead-letters/{letter}/fix-address", {**form, "country": "Z9"})
    assert bad.status_code == 422 and "two-letter country code" in bad.text
    good = console.post(f"/console/dead-letters/{letter}/fix-address", {**form, "country": "gb"})
    assert good.status_code == 303, good.text
    assert good.headers["location"] == f"/console/orders/{order}?notice=fixed"
    view = stack.order(order)
    assert view["ship_to"]["address"]["country"] == "GB"
    actors = {h["action"]: h["actor"] for h in view["history"]}
    assert actors["order.address_corrected"] == "user:sam"
    assert actors["work.redriven"] == "user:sam"
    again = console.post(f"/console/dead-letters/{letter}/redrive", {})
    assert again.status_code == 409 and "not a dead letter" in again.text
    gone = console.page(f"/console/dead-letters/{letter}")
    assert gone.status_code == 404 and "is not a dead letter: it is ready" in gone.text
    assert f'href="/console/orders/{order}"' in gone.text


def test_a_discard_is_proposed_by_one_admin_and_approved_by_another(stack: Stack) -> None:
    """Alice proposes a discard (nothing happens yet, she cannot approve it); Bob approves and
    the order takes its failure path; a viewer cannot propose."""
    [order] = _dead_bookings(stack, 1)
    letter = _letter_of(stack, order)
    stack.user("alice")
    stack.user("bob")
    stack.user("vera", "viewer")
    assert (
        log_in(stack, "vera")
        .post(f"/console/dead-letters/{letter}/discard", {"reason": "x"})
        .status_code
        == 403
    )
    alice: Console = log_in(stack, "alice")
    no_reason = alice.post(f"/console/dead-letters/{letter}/discard", {"reason": " "})
    assert no_reason.status_code == 422 and "reason is required" in no_reason.text
    proposed = alice.post(f"/console/dead-letters/{letter}/discard", {"reason": "customer left"})
    assert proposed.status_code == 303
    assert stack.api.get(f"/dead-letters/{letter}").json()["status"] == "dead"
    page = alice.page(f"/console/dead-letters/{letter}")
    proposal = re.search(r'data-proposal-id="(\d+)"', page.text)
    assert proposal and "Another admin must approve it" in page.text
    own = alice.post(f"/console/dead-letters/proposals/{proposal.group(1)}/approve", {})
    assert own.status_code == 403 and "another person must approve" in own.text
    bob = log_in(stack, "bob")
    approved = bob.post(f"/console/dead-letters/proposals/{proposal.group(1)}/approve", {})
    assert approved.status_code == 303
    assert stack.api.get(f"/dead-letters/{letter}").json()["status"] == "discarded"
    history = stack.order(order)["history"]
    assert any(h["action"] == "work.discarded" and h["actor"] == "user:bob" for h in history)


def test_a_group_redrive_shows_its_dry_run_then_its_progress(stack: Stack) -> None:
    """The confirm page counts the group (dry run, nothing redriven); confirming starts the bulk
    redrive; its progress page follows it to finished with every letter redriven."""
    _dead_bookings(stack, 3)
    stack.user("sam", "support")
    console = log_in(stack, "sam")
    cause = _cause(stack)
    confirm = console.page(f"/console/dead-letters/groups/redrive?cause={quote(cause, safe='')}")
    assert confirm.status_code == 200 and "<strong>3</strong> dead letters would" in confirm.text
    assert stack.api.get("/dead-letters").json()["total"] == 3
    started = console.post("/console/dead-letters/groups/redrive", {"cause": cause})
    assert started.status_code == 303
    progress = started.headers["location"]
    assert re.fullmatch(r"/console/dead-letters/redrives/\d+", progress)
    assert 'of <span id="redrive-total">3</span>' in console.page(progress).text

    def finished() -> bool:
        return ">finished<" in console.page(progress).text

    stack.work_until(finished)
    assert '<span id="redriven">3</span>' in console.page(progress).text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # not about the database
def test_roles_decide_who_may_act_on_dead_letters(stack: Stack) -> None:
    """A viewer may not redrive, fix or open the group redrive (403 pages); support may not
    discard (an admin's, four-eyes); a group redrive of a cause nobody has is a 404 page."""
    [order] = _dead_bookings(stack, 1)
    letter = _letter_of(stack, order)
    cause = quote(_cause(stack), safe="")
    stack.user("vera", "viewer")
    stack.user("sam", "support")
    vera = log_in(stack, "vera")
    assert vera.post(f"/console/dead-letters/{letter}/redrive", {}).status_code == 403
    fixed = vera.post(f"/console/dead-letters/{letter}/fix-address", {"country": "GB"})
    assert fixed.status_code == 403
    assert vera.page(f"/console/dead-letters/groups/redrive?cause={cause}").status_code == 403
    sam = log_in(stack, "sam")
    discard = sam.post(f"/console/dead-letters/{letter}/discard", {"reason": "no"})
    assert discard.status_code == 403 and "an admin can" in discard.text
    unknown = sam.post("/console/dead-letters/groups/redrive", {"cause": "no such cause"})
    assert unknown.status_code == 404
    assert stack.api.get(f"/dead-letters/{letter}").json()["status"] == "dead"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # not about the database
def test_the_api_takes_causes_as_long_as_it_lists_them(stack: Stack) -> None:
    """Causes reach ~360 characters (step, class, 300 of the error): the API's list and bulk
    redrive take a cause up to 500 (it was 200: a long cause could not be redriven by API)."""
    _dead_bookings(stack, 1)
    cause = _cause(stack)
    listed = stack.api.get("/dead-letters", params={"cause": cause})
    assert listed.status_code == 200 and listed.json()["total"] == 1
    dry = stack.api.post("/dead-letters/redrive", json={"cause": cause, "dry_run": True})
    assert dry.status_code == 200 and dry.json()["would_redrive"] == 1
    long = "book · permanent · " + "x" * 340
    assert stack.api.get("/dead-letters", params={"cause": long}).status_code == 200
    fits = stack.api.post("/dead-letters/redrive", json={"cause": long, "dry_run": True})
    assert fits.status_code == 200 and fits.json()["would_redrive"] == 0
    assert stack.api.get("/dead-letters", params={"cause": "x" * 501}).status_code == 422


def _dead_charge(stack: Stack) -> int:
    """An order whose charge is a dead letter (arranged in the database: Paydesk's permanent
    refusals are rare in the simulator)."""
    customer = stack.customer()
    stack.product("WIDGET", stock=5)
    order = stack.place(customer, [("WIDGET", 1)])
    error = "Paydesk POST /v1/payments: HTTP 400: amount not accepted"
    with stack.db.transaction() as session:
        session.execute(
            update(Task)
            .where(Task.order_id == order["id"], Task.kind == "charge")
            .values(
                status="dead",
                error_class="permanent",
                last_error=error,
                cause=fingerprint("charge", "permanent", error),
                last_failed_at=now(),
            )
        )
    return int(order["id"])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # not about the database
def test_a_payment_group_redrive_is_proposed_then_approved_by_another_admin(stack: Stack) -> None:
    """Charges go round again only with four-eyes: support is offered no group redrive of them;
    Alice's confirm page proposes; Bob approves from the inbox and lands on the progress."""
    _dead_charge(stack)
    cause = quote(_cause(stack), safe="")
    stack.user("sam", "support")
    stack.user("alice")
    stack.user("bob")
    sam = log_in(stack, "sam")
    assert "Redrive this group" not in sam.page(f"/console/dead-letters?cause={cause}").text
    assert sam.page(f"/console/dead-letters/groups/redrive?cause={cause}").status_code == 403
    alice = log_in(stack, "alice")
    confirm = alice.page(f"/console/dead-letters/groups/redrive?cause={cause}")
    assert confirm.status_code == 200 and "Propose redriving 1" in confirm.text
    proposed = alice.post("/console/dead-letters/groups/redrive", {"cause": _cause(stack)})
    assert proposed.status_code == 303 and proposed.headers["location"].endswith("proposed")
    assert stack.api.get("/dead-letters").json()["total"] == 1  # nothing ran yet
    bob = log_in(stack, "bob")
    inbox = bob.page("/console/dead-letters").text
    proposal = re.search(r'data-proposal-id="(\d+)"', inbox)
    assert proposal and "bulk redrive" in inbox
    approved = bob.post(f"/console/dead-letters/proposals/{proposal.group(1)}/approve", {})
    assert approved.status_code == 303
    assert re.fullmatch(r"/console/dead-letters/redrives/\d+", approved.headers["location"])
    assert "approved by user:bob" in bob.page(approved.headers["location"]).text
