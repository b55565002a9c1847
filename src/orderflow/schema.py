"""Every table, imported in one place: what Alembic and the tests see as the schema."""

from orderflow.alerts.models import Incident
from orderflow.audit.models import (
    AuditAnchor,
    AuditAnchorHead,
    AuditArchive,
    AuditArchived,
    AuditEntry,
)
from orderflow.catalog.models import Customer, Product
from orderflow.db import Base
from orderflow.dependencies.models import Dependency, DependencyChange
from orderflow.notifications.models import Notification
from orderflow.observability.models import BacklogSample
from orderflow.orders.models import Order, OrderLine
from orderflow.outbox import OutboxEvent
from orderflow.payments.models import Payment
from orderflow.people.models import ApiToken, ConsoleSession, Proposal, User
from orderflow.shipping.models import CarrierEvent, Shipment
from orderflow.tasks.models import Task, TaskAttempt

metadata = Base.metadata

__all__ = [
    "ApiToken",
    "AuditAnchor",
    "AuditAnchorHead",
    "AuditArchive",
    "AuditArchived",
    "AuditEntry",
    "BacklogSample",
    "CarrierEvent",
    "ConsoleSession",
    "Customer",
    "Dependency",
    "DependencyChange",
    "Incident",
    "Notification",
    "Order",
    "OrderLine",
    "OutboxEvent",
    "Payment",
    "Product",
    "Proposal",
    "Shipment",
    "Task",
    "TaskAttempt",
    "User",
    "metadata",
]
