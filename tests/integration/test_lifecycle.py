"""An order's whole life against the simulators, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import func, select

from orderflow.audit.models import AuditAnchor
from tests.support.stack import Stack


def test_order_goes_from_placed_to_delivered_with_one_charge_booking_and_email(
    stack: Stack,
) -> None:
    """The happy path: charged once, booked once, one "shipped" e-mail, then delivered."""
    customer = stack.customer()
    stack.product("WIDGET", stock=10)
    order = stack.place(customer, [("WIDGET", 2)])
    assert order["status"] == "placed"

    done = stack.work_until_status(order["id"], "delivered")

    assert [h["to"] for h in done["history"] if h["to"]] == [
        "paid",
        "scheduled",
        "shipped",
        "delivered",
    ]
    assert done["payment"]["status"] == "succeeded"
    assert done["shipment"]["tracking_number"]
    assert [n["kind"] for n in done["notifications"]] == ["shipped"]
    ref = order["reference"]
    assert stack.outside.paydesk_stats()["charges_by_order_reference"] == {ref: 1}
    assert stack.outside.carrier_stats()["bookings_by_reference"] == {ref: 1}
    mails = stack.outside.mail.messages()
    assert len(mails) == 1
    assert ref in mails[0].subject and "shipped" in mails[0].subject
    assert done["shipment"]["tracking_number"] in mails[0].body


def test_history_entries_name_their_task_and_the_heads_get_anchored(stack: Stack) -> None:
    """Entries written by workers carry task/attempt ids; the periodic anchor covers heads."""
    stack.product("WIDGET", stock=10)
    order = stack.place(stack.customer(), [("WIDGET", 1)])
    done = stack.work_until_status(order["id"], "delivered")
    paid = next(h for h in done["history"] if h["action"] == "payment.succeeded")
    assert paid["details"]["correlation"]["step"] == "charge"
    assert paid["details"]["correlation"]["attempt"] == 1
    with stack.db.read() as session:
        assert (session.scalar(select(func.count()).select_from(AuditAnchor)) or 0) >= 1
