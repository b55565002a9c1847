"""The e-mail step: one message per order and milestone, with a stable Message-ID."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message

from sqlalchemy.orm import Session

from orderflow.audit import chain
from orderflow.notifications import messages
from orderflow.notifications.mailer import Mailer
from orderflow.notifications.models import Notification
from orderflow.observability.metrics import EMAILS_SENT
from orderflow.orders import service, workflow
from orderflow.orders.models import Order
from orderflow.orders.status import OrderStatus
from orderflow.shipping import tracking
from orderflow.shipping.vocabulary import ShipmentStatus
from orderflow.tasks import queue
from orderflow.tasks.queue import ClaimedTask

ACTOR = "worker:notifications"


@dataclass(frozen=True)
class Mail:
    milestone: str
    message: Message
    sent: bool = False  # an earlier attempt's SMTP server accepted it: record, do not resend


class NotifyStep:
    kind = workflow.NOTIFY
    reads = frozenset({"notifications", "lines", "payments", "shipment"})  # of the order
    dependency = workflow.DEPENDENCY_OF[kind]
    marks_performed = True  # an e-mail has no idempotency key: exactly one, per message

    def __init__(self, mailer: Mailer, mail_from: str) -> None:
        self.mailer = mailer
        self.mail_from = mail_from

    def prepare(self, session: Session, task: ClaimedTask) -> Mail | None:
        milestone = str(task.payload["milestone"])
        order = session.get(Order, task.order_id)
        assert order is not None
        if any(n.kind == milestone for n in order.notifications):
            return None
        context: dict[str, object] = {
            "name": order.ship_to["name"],
            "address": order.ship_to["address"],
            "lines": [{"quantity": ln.quantity, "name": ln.name} for ln in order.lines],
        }
        charge = next((p for p in order.payments if p.kind == "charge"), None)
        if milestone == "shipped":
            shipment = order.shipment
            context["tracking_number"] = shipment.tracking_number if shipment else "-"
        elif milestone == "payment_failed":
            context["decline_code"] = (charge.decline_code if charge else None) or "declined"
        elif milestone == "cancelled":
            context["refunded"] = charge is not None and charge.status == "succeeded"
        message = messages.build(
            milestone=milestone,
            reference=order.reference,
            recipient=order.ship_to["email"],
            mail_from=self.mail_from,
            context=context,
        )
        return Mail(milestone=milestone, message=message, sent=queue.performed(task))

    def perform(self, mail: Mail, mark: Callable[[], None] | None = None) -> Mail:
        if mail.sent:
            return mail
        self.mailer.send(mail.message, on_accepted=mark)
        EMAILS_SENT.labels(mail.milestone).inc()
        return mail

    def complete(self, session: Session, task: ClaimedTask, mail: Mail) -> None:
        order_id = task.order_id
        assert order_id is not None
        status = service.lock(session, order_id)
        session.add(
            Notification(
                order_id=order_id,
                kind=mail.milestone,
                recipient=str(mail.message["To"]),
                subject=str(mail.message["Subject"]),
                message_id=str(mail.message["Message-ID"]),
            )
        )
        chain.record(
            session,
            order_id,
            actor=ACTOR,
            action=f"email.{mail.milestone}",
            details={"to": str(mail.message["To"]), "message_id": str(mail.message["Message-ID"])},
        )
        if mail.milestone == "shipped":
            # The carrier may already have delivered; the order waited for this e-mail.
            shipment = tracking.current_shipment(session, order_id)
            if (
                shipment is not None
                and shipment.status == ShipmentStatus.DELIVERED
                and status == OrderStatus.SHIPPED
            ):
                service.move(
                    session,
                    order_id,
                    OrderStatus.DELIVERED,
                    actor=ACTOR,
                    action="shipment.delivered",
                    details={"carrier_status": shipment.carrier_status},
                )
