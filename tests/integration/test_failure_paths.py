"""The order's failure paths: declines, cancellations, carrier refusals and lost parcels."""

from __future__ import annotations

from sqlalchemy import select

from orderflow.tasks.models import Task
from tests.support.stack import Stack


def test_declined_card_fails_the_order_releases_stock_and_tells_the_customer(stack: Stack) -> None:
    """pm_declined → payment_failed, stock back, one e-mail naming the order, no booking."""
    customer = stack.customer(payment_method="pm_declined")
    stack.product("WIDGET", stock=5)
    order = stack.place(customer, [("WIDGET", 2)])
    assert stack.api.get("/products/WIDGET").json()["stock"] == 3

    failed = stack.work_until_status(order["id"], "payment_failed")
    stack.work_until(lambda: bool(stack.order(order["id"])["notifications"]))

    assert stack.api.get("/products/WIDGET").json()["stock"] == 5
    assert failed["payment"]["decline_code"] == "card_declined"
    mails = stack.outside.mail.messages()
    assert len(mails) == 1 and order["reference"] in mails[0].subject
    assert stack.outside.carrier_stats()["bookings_by_reference"] == {}
    assert stack.outside.paydesk_stats()["charges_by_order_reference"] == {}


def test_cancel_before_payment_charges_nothing(stack: Stack) -> None:
    """Cancelled while placed: stock back, Paydesk never called, a cancellation e-mail."""
    customer = stack.customer()
    stack.product("WIDGET", stock=5)
    order = stack.place(customer, [("WIDGET", 2)])
    response = stack.api.post(f"/orders/{order['id']}/cancel", json={"reason": "phoned back"})
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    stack.work_until(lambda: bool(stack.order(order["id"])["notifications"]))
    assert stack.api.get("/products/WIDGET").json()["stock"] == 5
    assert stack.outside.paydesk_stats()["requests"] == 0
    assert "cancelled" in stack.outside.mail.messages()[0].subject


def test_cancel_after_payment_refunds_and_books_nothing(stack: Stack) -> None:
    """Cancelled while paid: one refund of the full amount, no booking."""
    customer = stack.customer()
    stack.product("WIDGET", stock=5, price=1000)
    order = stack.place(customer, [("WIDGET", 2)])
    stack.work_until_status(order["id"], "paid")
    assert stack.api.post(f"/orders/{order['id']}/cancel").status_code == 200
    stack.work_until(lambda: (stack.order(order["id"])["payment"] or {}).get("refund") is not None)
    ref = order["reference"]
    assert stack.outside.paydesk_stats()["refunded_amount_by_order_reference"] == {ref: 2000}
    assert stack.outside.carrier_stats()["bookings_by_reference"] == {}
    assert stack.api.get("/products/WIDGET").json()["stock"] == 5


def test_cancel_after_booking_cancels_the_shipment_and_refunds(stack: Stack) -> None:
    """Cancelled while scheduled: the booking is cancelled at the carrier and money refunded."""
    stack.outside.carrier_switches(progress_seconds=3600)  # the parcel is never collected
    customer = stack.customer()
    stack.product("WIDGET", stock=5, price=1000)
    order = stack.place(customer, [("WIDGET", 1)])
    stack.work_until_status(order["id"], "scheduled")
    assert stack.api.post(f"/orders/{order['id']}/cancel").status_code == 200

    def undone() -> bool:
        view = stack.order(order["id"])
        return view["shipment"]["status"] == "cancelled" and view["payment"]["refund"] is not None

    stack.work_until(undone)
    assert stack.outside.carrier_stats()["cancels"] == 1
    ref = order["reference"]
    assert stack.outside.paydesk_stats()["refunded_amount_by_order_reference"] == {ref: 1000}


def test_a_shipped_order_cannot_be_cancelled(stack: Stack) -> None:
    """Cancel after collection is a 409 with a reason, and changes nothing."""
    stack.outside.carrier_switches(progress_seconds=0.05)
    customer = stack.customer()
    stack.product("WIDGET", stock=5)
    order = stack.place(customer, [("WIDGET", 1)])
    stack.work_until_status(order["id"], "shipped", "delivered")
    response = stack.api.post(f"/orders/{order['id']}/cancel")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_cancellable"
    assert stack.order(order["id"])["status"] in ("shipped", "delivered")


def test_carrier_refusing_the_address_makes_a_dead_letter_with_evidence(stack: Stack) -> None:
    """Bob's Post 422 is permanent: the booking is dead-lettered at once, the order stays paid."""
    customer = stack.customer(country="XX")
    stack.product("WIDGET", stock=5)
    order = stack.place(customer, [("WIDGET", 1)])

    def dead() -> bool:
        with stack.db.read() as session:
            task = session.scalar(
                select(Task).where(Task.order_id == order["id"], Task.kind == "book")
            )
            return task is not None and task.status == "dead"

    stack.work_until(dead)
    view = stack.order(order["id"])
    assert view["status"] == "paid"
    [book] = [w for w in view["work"] if w["step"] == "book"]
    assert book["error_class"] == "permanent"
    assert "422" in book["last_error"]
    assert book["attempts"] == 1


def test_lost_parcel_ends_in_delivery_failed_after_one_shipped_email(stack: Stack) -> None:
    """Bob's Post 'lost' after collection → delivery_failed; the shipped e-mail went once."""
    customer = stack.customer(postcode="LOST")
    stack.product("WIDGET", stock=5)
    order = stack.place(customer, [("WIDGET", 1)])
    done = stack.work_until_status(order["id"], "delivery_failed")
    stack.work_until(lambda: len(stack.outside.mail.messages()) >= 1)
    assert done["shipment"]["status"] == "lost"
    assert [h["to"] for h in done["history"] if h["to"]] == [
        "paid",
        "scheduled",
        "shipped",
        "delivery_failed",
    ]
    assert len(stack.outside.mail.messages()) == 1
