"""Prometheus metrics.

Two kinds: this process's own counters and histograms (webhooks seen by this `serve`, step
latencies of this `worker`), and gauges read from the database at scrape time, which every
process agrees on (orders by status, work by step and status, age of the oldest due task,
dead letters by cause, dependency state). The database gauges are cached for a few seconds
so that a busy scraper never becomes load.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from threading import Lock

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import and_, func, select

from orderflow.backpressure import STATES, Gauge
from orderflow.clock import now
from orderflow.db import Database
from orderflow.dependencies.models import Dependency
from orderflow.notifications.models import Notification
from orderflow.orders.models import Order
from orderflow.tasks.models import Priority, Task, TaskStatus

WEBHOOKS = Counter(
    "orderflow_webhooks_total",
    "Carrier webhooks received, by what became of them",
    ["outcome"],  # applied | duplicate | stale | unknown_status | unmatched | rejected | unreadable
)
STEP_SECONDS = Histogram(
    "orderflow_step_duration_seconds",
    "Duration of one attempt at a step's outside call",
    ["step", "outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
EMAILS_SENT = Counter("orderflow_emails_sent_total", "Customer e-mails sent", ["kind"])
PLACED_TO_SHIPPED = Histogram(
    "orderflow_placed_to_shipped_seconds",
    "From the order's acceptance to the carrier collecting the parcel",
    buckets=(60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 2 * 86400, 4 * 86400, 7 * 86400),
)


class DatabaseCollector(Collector):
    def __init__(self, db: Database, cache_seconds: float = 5.0) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        self._cached: list[Metric] = []
        self._at = 0.0
        self._lock = Lock()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            if time.monotonic() - self._at > self.cache_seconds:
                self._cached = list(self._read())
                self._at = time.monotonic()
            return list(self._cached)

    def _read(self) -> Iterator[Metric]:
        at = now()
        with self.db.read() as session:
            orders = GaugeMetricFamily("orderflow_orders", "Orders by status", labels=["status"])
            for status, count in session.execute(
                select(Order.status, func.count()).group_by(Order.status)
            ):
                orders.add_metric([status], count)
            yield orders

            tasks = GaugeMetricFamily(
                "orderflow_tasks", "Unfinished work by step and status", labels=["step", "status"]
            )
            open_statuses = [TaskStatus.READY, TaskStatus.RUNNING, TaskStatus.DEAD]
            for kind, status, count in session.execute(
                select(Task.kind, Task.status, func.count())
                .where(Task.status.in_(open_statuses))
                .group_by(Task.kind, Task.status)
            ):
                tasks.add_metric([kind, status], count)
            yield tasks

            oldest = GaugeMetricFamily(
                "orderflow_task_oldest_due_age_seconds",
                "How long the oldest due, unclaimed task of each step has been waiting",
                labels=["step"],
            )
            due = and_(Task.status == TaskStatus.READY, Task.run_at <= at)
            for kind, first in session.execute(
                select(Task.kind, func.min(Task.run_at)).where(due).group_by(Task.kind)
            ):
                oldest.add_metric([kind], max(0.0, (at - first).total_seconds()))
            yield oldest

            dead = GaugeMetricFamily(
                "orderflow_dead_letters",
                "Dead letters by step and error class",
                labels=["step", "error_class"],
            )
            for kind, error_class, count in session.execute(
                select(Task.kind, Task.error_class, func.count())
                .where(Task.status == TaskStatus.DEAD)
                .group_by(Task.kind, Task.error_class)
            ):
                dead.add_metric([kind, error_class or "unknown"], count)
            yield dead

            up = GaugeMetricFamily(
                "orderflow_dependency_up",
                "1 while the dependency's breaker is closed, 0 while it is open",
                labels=["dependency"],
            )
            for dep in session.scalars(select(Dependency)):
                up.add_metric([dep.name], 1.0 if dep.state == "closed" else 0.0)
            yield up

            sent = GaugeMetricFamily(
                "orderflow_emails_recorded",
                "Customer e-mails recorded as sent, by kind",
                labels=["kind"],
            )
            for kind, count in session.execute(
                select(Notification.kind, func.count()).group_by(Notification.kind)
            ):
                sent.add_metric([kind], count)
            yield sent


class PressureCollector(Collector):
    """Backpressure as this process sees it (measured at most once a second)."""

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge

    def collect(self) -> Iterable[Metric]:
        pressure = self.gauge.current()
        views = [("", "bulk and queue intake", pressure)]
        views.append(("interactive_", "POST /orders", pressure.of(Priority.INTERACTIVE)))
        for prefix, whose, view in views:
            state = GaugeMetricFamily(
                f"orderflow_backpressure_{prefix}state",
                f"1 for the current state of {whose} (normal, warning, shedding), 0 for others",
                labels=["state"],
            )
            for name in STATES:
                state.add_metric([name], 1.0 if view.state == name else 0.0)
            yield state
            yield GaugeMetricFamily(
                f"orderflow_backpressure_{prefix}oldest_due_seconds",
                f"Age of the oldest due payment task whose dependency is up ({whose} reads it)",
                value=view.oldest_due_seconds,
            )


def registry_for(db: Database | None, pressure: Gauge | None = None) -> CollectorRegistry:
    """This process's metrics, plus the database's when `db` is given."""
    registry = CollectorRegistry()
    for metric in (WEBHOOKS, STEP_SECONDS, EMAILS_SENT, PLACED_TO_SHIPPED):
        registry.register(metric)
    if db is not None:
        registry.register(DatabaseCollector(db))
    if pressure is not None:
        registry.register(PressureCollector(pressure))
    return registry
