"""Everything support needs about one order, in one read: "charged but no parcel?" in a minute.

The order, its history in plain language with the integrity verdict, what failed (every failed
attempt, every dead letter), the payments, what the carrier told us, and the e-mails sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from orderflow.audit import chain, timeline
from orderflow.errors import NotFound
from orderflow.notifications.models import Notification
from orderflow.orders import queries
from orderflow.orders.models import Order, parse_order_id
from orderflow.payments.models import Payment
from orderflow.shipping.models import CarrierEvent, Shipment
from orderflow.tasks.models import Task, TaskAttempt


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def resolve(session: Session, ref: str) -> int:
    """An order id from `ORD-000123` or `123`; NotFound otherwise."""
    order_id = parse_order_id(ref)
    if order_id is None or session.get(Order, order_id) is None:
        raise NotFound(f"no order {ref}")
    return order_id


def audit_view(session: Session, order_id: int, public_key: bytes | None = None) -> dict[str, Any]:
    """GET /orders/{id}/audit: the entries as stored, and the integrity verdict."""
    order = session.get(Order, order_id)
    if order is None:
        raise NotFound(f"no order with id {order_id}")
    start = chain.chain_start(session, order_id)
    return {
        "order_id": order_id,
        "reference": order.reference,
        "start": {"seq": start.seq, "hash": start.hash, "archive_id": start.archive_id},
        "head": {"seq": order.audit_seq, "hash": order.audit_head},
        "entries": [chain.as_dict(e) for e in chain.entries_of(session, order_id)],
        "verdict": chain.verify_order(session, order_id, public_key).as_dict(),
    }


def investigation(
    session: Session, order_id: int, public_key: bytes | None = None
) -> dict[str, Any]:
    view = queries.order_view(session, order_id)  # NotFound for an unknown id
    view.pop("history", None)  # the timeline below says it better
    entries = [chain.as_dict(e) for e in chain.entries_of(session, order_id)]
    verdict = chain.verify_order(session, order_id, public_key)
    payments = session.scalars(
        select(Payment).where(Payment.order_id == order_id).order_by(Payment.id)
    ).all()
    shipment = session.scalar(select(Shipment).where(Shipment.order_id == order_id))
    seen_as = CarrierEvent.reference == view["reference"]
    if shipment is not None:
        seen_as = or_(seen_as, CarrierEvent.carrier_shipment_id == shipment.carrier_shipment_id)
    events = session.scalars(
        select(CarrierEvent).where(seen_as).order_by(CarrierEvent.occurred_at, CarrierEvent.id)
    ).all()
    emails = session.scalars(
        select(Notification).where(Notification.order_id == order_id).order_by(Notification.id)
    ).all()
    items = timeline.timeline(entries, view["currency"])
    return {
        "order": view,
        "summary": _summary(view, payments, shipment, emails, verdict),
        "integrity": verdict.as_dict(),
        "timeline": items,
        "failures": failures(session, order_id),
        "payments": [
            {
                "kind": p.kind,
                "status": p.status,
                "provider": "Paydesk",
                "provider_id": p.provider_id,
                "amount": p.amount,
                "currency": p.currency,
                "money": timeline.money(p.amount, p.currency),
                "decline_code": p.decline_code,
                "at": _iso(p.created_at),
            }
            for p in payments
        ],
        "shipment": None
        if shipment is None
        else {
            "carrier": shipment.carrier,
            "shipment_id": shipment.carrier_shipment_id,
            "tracking_number": shipment.tracking_number,
            "status": shipment.status,
            "carrier_status": shipment.carrier_status,
            "booked_at": _iso(shipment.booked_at),
            "last_event_at": _iso(shipment.last_event_at),
        },
        "carrier_events": [
            {
                "event_id": e.event_id,
                "source": e.source,
                "carrier_status": e.carrier_status,
                "occurred_at": _iso(e.occurred_at),
                "received_at": _iso(e.received_at),
                "outcome": e.outcome,
            }
            for e in events
        ],
        "emails": [
            {
                "kind": n.kind,
                "to": n.recipient,
                "subject": n.subject,
                "message_id": n.message_id,
                "sent_at": _iso(n.sent_at),
            }
            for n in emails
        ],
    }


def failures(session: Session, order_id: int) -> list[dict[str, Any]]:
    """Every attempt that failed, grouped by its task; dead letters say so."""
    tasks = session.scalars(select(Task).where(Task.order_id == order_id).order_by(Task.id)).all()
    ids = [t.id for t in tasks]
    attempts = (
        session.scalars(
            select(TaskAttempt)
            .where(TaskAttempt.task_id.in_(ids), TaskAttempt.outcome != "ok")
            .order_by(TaskAttempt.id)
        ).all()
        if ids
        else []
    )
    by_task: dict[int, list[TaskAttempt]] = {}
    for a in attempts:
        by_task.setdefault(a.task_id, []).append(a)
    return [
        {
            "task_id": t.id,
            "step": t.kind,
            "status": t.status,
            "dead_letter": t.status in ("dead", "discarded"),
            "attempts": t.attempts,
            "error_class": t.error_class,
            "last_error": t.last_error,
            "first_failed_at": _iso(t.first_failed_at),
            "last_failed_at": _iso(t.last_failed_at),
            "failed_attempts": [
                {
                    "attempt": a.attempt,
                    "worker": a.worker,
                    "at": _iso(a.started_at),
                    "outcome": a.outcome,
                    "http_status": a.http_status,
                    "error": a.error,
                }
                for a in by_task.get(t.id, [])
            ],
        }
        for t in tasks
        if t.last_error or t.id in by_task or t.status in ("dead", "discarded")
    ]


def _summary(
    view: dict[str, Any],
    payments: Any,
    shipment: Shipment | None,
    emails: Any,
    verdict: chain.Verdict,
) -> list[str]:
    """The answers to the usual questions, one line each."""
    lines = [f"{view['reference']} is {view['status']}."]
    charge = next((p for p in payments if p.kind == "charge"), None)
    refund = next((p for p in payments if p.kind == "refund"), None)
    if charge is None:
        lines.append("The customer was not charged.")
    elif charge.status == "succeeded":
        lines.append(
            f"Charged {timeline.money(charge.amount, charge.currency)} on "
            f"{charge.created_at:%Y-%m-%d %H:%M} UTC (Paydesk {charge.provider_id})."
        )
    else:
        lines.append(f"The charge was declined ({charge.decline_code}).")
    if refund is not None:
        lines.append(
            f"Refunded {timeline.money(refund.amount, refund.currency)} on "
            f"{refund.created_at:%Y-%m-%d %H:%M} UTC (Paydesk {refund.provider_id})."
        )
    if shipment is None:
        lines.append("No parcel was booked with the carrier.")
    else:
        carrier = timeline.CARRIERS.get(shipment.carrier, shipment.carrier)
        lines.append(
            f"Parcel {shipment.tracking_number} with {carrier}: "
            f"{shipment.status} (carrier says “{shipment.carrier_status}”)."
        )
    for n in emails:
        lines.append(f"E-mail “{n.kind}” sent to {n.recipient} on {n.sent_at:%Y-%m-%d %H:%M} UTC.")
    lines.append(
        f"History: {verdict.entries} entries, integrity verified."
        if verdict.ok
        else f"History: INTEGRITY FAILURE — {'; '.join(verdict.problems)}"
    )
    return lines
