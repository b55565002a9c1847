"""Re-sending a lost or returned parcel: a replacement order, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner
from sqlalchemy import func, select, update

from orderflow.audit.verify_bundle import verify_bundle
from orderflow.catalog.models import Product
from orderflow.cli import main
from orderflow.orders.models import Order
from orderflow.tasks.models import Task
from tests.support.stack import PASSWORD, Stack


def lost_order(stack: Stack, stock: int = 5) -> dict[str, Any]:
    """An order shipped (its e-mail out) whose parcel Bob's Post then lost: delivery_failed.
    Postcode STUCK: the simulator moves it no further than asked (the replacement too)."""
    customer = stack.customer(postcode="STUCK")
    stack.product("WIDGET", stock=stock)
    order = stack.place(customer, [("WIDGET", 2)])
    booked = stack.work_until_status(order["id"], "scheduled")
    stack.outside.force_carrier_status(booked["shipment"]["shipment_id"], "collected")
    stack.work_until_status(order["id"], "shipped")
    stack.outside.force_carrier_status(booked["shipment"]["shipment_id"], "lost")
    return stack.work_until_status(order["id"], "delivery_failed")


def stock(stack: Stack) -> int:
    with stack.db.read() as session:
        return int(session.scalar(select(Product.stock).where(Product.sku == "WIDGET")) or 0)


def order_count(stack: Stack) -> int:
    with stack.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(Order)) or 0)


def shipped_mails(stack: Stack, reference: str) -> list[Any]:
    return [
        m
        for m in stack.outside.mail.messages()
        if reference in m.subject and "shipped" in m.subject.lower()
    ]


def test_a_lost_parcel_is_resent_as_one_replacement_booked_once_and_never_charged(
    stack: Stack,
) -> None:
    """The replacement: same customer and lines, linked both ways, paid by the original's
    charge (Paydesk asked nothing), booked once under its own key, one "shipped" e-mail;
    both histories say who did it and verify."""
    original = lost_order(stack)
    ref = original["reference"]
    left = stock(stack)

    answer = stack.api.post(f"/orders/{ref}/resend", json={"reason": "customer called"})

    assert answer.status_code == 201, answer.text
    new = answer.json()
    assert answer.headers["Location"] == f"/api/v1/orders/{new['id']}"
    assert new["replaces"] == ref and new["status"] == "paid"
    assert new["customer_id"] == original["customer_id"]
    assert [(ln["sku"], ln["quantity"]) for ln in new["lines"]] == [("WIDGET", 2)]
    assert new["total"] == original["total"] and new["payment"] is None
    assert stock(stack) == left - 2
    assert stack.order(original["id"])["replaced_by"] == new["reference"]
    first, paid = new["history"][:2]
    assert first["action"] == "order.replacement_placed" and first["actor"] == "admin:api"
    assert first["details"]["replaces"] == ref
    assert paid["action"] == "payment.covered_by_original" and paid["to"] == "paid"
    assert paid["details"]["original"] == ref
    assert paid["details"]["payment_id"] == original["payment"]["payment_id"]

    booked = stack.work_until_status(new["id"], "scheduled")
    stack.outside.force_carrier_status(booked["shipment"]["shipment_id"], "collected")
    stack.work_until_status(new["id"], "shipped")
    stack.work_until(lambda: len(shipped_mails(stack, new["reference"])) == 1)
    stack.work_until(lambda: stack.worker.run_once() == 0)

    assert stack.outside.paydesk_stats()["charges_by_order_reference"] == {ref: 1}
    assert stack.outside.carrier_stats()["bookings_by_reference"] == {ref: 1, new["reference"]: 1}
    with stack.db.read() as session:
        keys = session.scalars(select(Task.key).where(Task.kind == "book")).all()
    assert sorted(keys) == sorted([f"{ref}:book", f"{new['reference']}:book"])
    assert len(shipped_mails(stack, new["reference"])) == 1
    assert len(shipped_mails(stack, ref)) == 1
    resent = [h for h in stack.order(original["id"])["history"] if h["action"] == "order.resent"]
    assert [(h["actor"], h["details"]["replacement"]) for h in resent] == [
        ("admin:api", new["reference"])
    ]
    for order_id in (original["id"], new["id"]):
        integrity = stack.api.get(f"/orders/{order_id}/investigation").json()["integrity"]
        assert integrity["ok"], integrity
        assert verify_bundle(stack.api.get(f"/orders/{order_id}/dispute-bundle").json()) == []
    timeline = stack.api.get(f"/orders/{new['id']}/investigation").json()["timeline"]
    lines = [t["text"] for t in timeline]
    assert lines[0].startswith(f"placed as a replacement of {ref} by admin:api")
    assert f"paid by {ref}'s charge" in lines[1]


def test_a_second_resend_returns_the_same_replacement_and_creates_nothing(stack: Stack) -> None:
    """Idempotent: the replay answers 200 with the first replacement; one order, one stock
    reservation, one "re-sent" entry."""
    original = lost_order(stack)
    first = stack.api.post(f"/orders/{original['id']}/resend")
    assert first.status_code == 201, first.text
    count, left = order_count(stack), stock(stack)

    again = stack.api.post(f"/orders/{original['reference']}/resend")

    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert (order_count(stack), stock(stack)) == (count, left)
    history = stack.order(original["id"])["history"]
    assert sum(h["action"] == "order.resent" for h in history) == 1


def test_resend_is_refused_unless_delivery_failed_and_for_unknown_orders(stack: Stack) -> None:
    """A placed order: 409 not_resendable, as JSON; unknown id or reference: 404."""
    stack.product("WIDGET", stock=5)
    order = stack.place(stack.customer(), [("WIDGET", 1)])

    refused = stack.api.post(f"/orders/{order['id']}/resend")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "not_resendable"
    assert "placed" in refused.json()["error"]["message"]
    assert stack.api.post("/orders/999999/resend").status_code == 404
    assert stack.api.post("/orders/ORD-999999/resend").json()["error"]["code"] == "not_found"
    assert stack.order(order["id"])["replaced_by"] is None


def test_resend_without_stock_is_refused_and_leaves_nothing_behind(stack: Stack) -> None:
    """Out of stock: 409 insufficient_stock; no order, no stock taken, no history entry."""
    original = lost_order(stack)
    with stack.db.transaction() as session:
        session.execute(update(Product).where(Product.sku == "WIDGET").values(stock=1))
    count = order_count(stack)
    seq = len(stack.order(original["id"])["history"])

    refused = stack.api.post(f"/orders/{original['id']}/resend")

    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "insufficient_stock"
    assert (order_count(stack), stock(stack)) == (count, 1)
    after = stack.order(original["id"])
    assert len(after["history"]) == seq and after["replaced_by"] is None


def test_an_order_refunded_after_the_carrier_cancelled_it_is_not_resent(stack: Stack) -> None:
    """The carrier cancelled the booking: delivery_failed with a refund, so no re-send."""
    customer = stack.customer(postcode="STUCK")
    stack.product("WIDGET", stock=5)
    order = stack.place(customer, [("WIDGET", 1)])
    booked = stack.work_until_status(order["id"], "scheduled")
    stack.outside.force_carrier_status(booked["shipment"]["shipment_id"], "cancelled")
    stack.work_until_status(order["id"], "delivery_failed")

    refused = stack.api.post(f"/orders/{order['id']}/resend")

    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "refunded"
    assert order_count(stack) == 1


def test_with_named_users_a_resend_needs_a_second_admin(stack: Stack) -> None:
    """Like a refund: alice's direct re-send is refused (four_eyes_required), her proposal she
    cannot approve; bob approves it and the replacement is placed once, naming both; a
    refund of the re-sent order is then refused."""
    original = lost_order(stack)
    alice, bob = stack.as_user("alice"), stack.as_user("bob")
    viewer = stack.as_user("vera", "viewer")

    assert viewer.post(f"/orders/{original['id']}/resend").status_code == 403
    direct = alice.post(f"/orders/{original['id']}/resend")
    assert direct.status_code == 409
    assert direct.json()["error"]["code"] == "four_eyes_required"
    body = {"action": "resend", "params": {"order_id": original["id"]}, "reason": "lost"}
    proposal = alice.post("/proposals", json=body).json()
    assert alice.post(f"/proposals/{proposal['id']}/approve").status_code == 403
    assert alice.post("/proposals", json=body).status_code == 409  # already proposed

    approved = bob.post(f"/proposals/{proposal['id']}/approve")

    assert approved.status_code == 200, approved.text
    new_ref = approved.json()["outcome"]["replacement"]
    assert stack.order(original["id"])["replaced_by"] == new_ref
    new = stack.order(approved.json()["outcome"]["replacement_id"])
    assert new["history"][0]["actor"] == "user:bob"
    actions = [h["action"] for h in stack.order(original["id"])["history"]]
    assert actions[-3:] == ["four_eyes.proposed", "four_eyes.approved", "order.resent"]
    again = alice.post("/proposals", json=body)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_resent"
    refund = {"action": "refund", "params": {"order_id": original["id"]}, "reason": "x"}
    assert alice.post("/proposals", json=refund).status_code == 409
    assert bob.post(f"/orders/{original['id']}/resend").json()["id"] == new["id"]


def test_the_cli_proposes_a_resend_by_reference_and_refuses_with_a_clear_exit(
    stack: Stack,
) -> None:
    """`orderflow proposals propose resend ORD-…` proposes it (bob approves from the CLI); a
    second proposal, an order that is not delivery_failed, or no order at all exit non-zero
    with the reason."""
    original = lost_order(stack)
    stack.user("alice")
    stack.user("bob")
    env = {"ORDERFLOW_DATABASE_URL": stack.settings.database_url}

    def cli(*args: str, who: str = "alice") -> Any:
        command = ["proposals", *args, "--as", who, "--password-stdin"]
        return CliRunner().invoke(main, command, env=env, input=PASSWORD + "\n")

    proposed = cli("propose", "resend", original["reference"], "--reason", "lost")
    assert proposed.exit_code == 0, proposed.output
    [pending] = stack.api.get("/proposals").json()["data"]
    assert (pending["action"], pending["order_id"]) == ("resend", original["id"])
    again = cli("propose", "resend", str(original["id"]), "--reason", "lost")
    assert again.exit_code != 0 and "already proposed" in again.output
    approved = cli("approve", str(pending["id"]), who="bob")
    assert approved.exit_code == 0, approved.output
    assert stack.order(original["id"])["replaced_by"] in approved.output
    other = stack.place(stack.customer(), [("WIDGET", 1)])
    refused = cli("propose", "resend", other["reference"], "--reason", "x")
    assert refused.exit_code != 0 and "only a delivery_failed order" in refused.output
    unknown = cli("propose", "resend", "ORD-0000x1", "--reason", "x")
    assert unknown.exit_code != 0 and "no order" in unknown.output
