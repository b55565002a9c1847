"""An order's whole life against the simulators, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import event, func, select

from orderflow.audit.models import AuditAnchor
from orderflow.catalog.models import Customer
from orderflow.orders import queries
from orderflow.orders.models import Order
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


def test_a_batch_loads_only_what_its_steps_read_of_their_orders(stack: Stack) -> None:
    """Charges read their orders' payments and customers, bookings their lines and shipments:
    the batch's preload asks for nothing else, and answers the steps' reads itself."""
    customer = stack.customer()
    stack.product("WIDGET", stock=10)
    ids = [stack.place(customer, [("WIDGET", 1)])["id"] for _ in range(3)]
    statements: list[str] = []
    event.listen(stack.db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    with stack.db.read() as session:
        kept = queries.preload(session, {i: {"payments", "customer"} for i in ids})
        read = " ".join(s for s in statements if s.startswith("SELECT"))
        assert sum(s.startswith("SELECT") for s in statements) == 3, statements
        assert "FROM payments" in read and "FROM customers" in read
        assert "FROM order_lines" not in read and "FROM shipments" not in read
        statements.clear()
        for i in ids:
            order = session.get(Order, i)
            assert order is not None and order.payments == []
            assert session.get(Customer, order.customer_id) is not None
        assert statements == [], "the steps' reads are answered from the session"
    assert len(kept) == 3 + 1
