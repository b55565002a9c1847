"""Backpressure: intake slows down honestly when the first lane of work falls behind.

Work has lanes (`orders.workflow.LANES`): payments first, then bookings and tracking, then
customer e-mail, then alerts, relay and other periodic jobs. The pressure is the age of the
oldest due task in the first lane whose dependency is up: an outage is not falling behind (the
orders wait, and are accepted meanwhile). Interactive work (orders placed one by one) is claimed
before bulk work (batches, the intake queue), so each is measured: `POST /orders` answers to
the interactive work's age, bulk intake and the workers to everyone's. A burst of bulk intake
therefore slows bulk intake down, never the orders placed one by one. It is read from the
database, so every API process, the queue intake and the workers agree:

- normal:   intake at full speed;
- warning:  older than `warning_seconds`: the queue intake takes a smaller prefetch;
- shedding: older than `shedding_seconds`: intake answers 429 with Retry-After, the queue
            intake takes one message at a time.

Workers read the same age, and take the lanes strictly in order far sooner (see
`Worker.strict_lanes_seconds`): low lanes wait, never dropped.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orderflow.clock import now
from orderflow.db import Database
from orderflow.dependencies.models import Dependency
from orderflow.orders.workflow import DEPENDENCY_OF, LANES
from orderflow.tasks.errors import describe
from orderflow.tasks.models import Priority, Task, TaskStatus

log = structlog.get_logger("orderflow.backpressure")

NORMAL, WARNING, SHEDDING = "normal", "warning", "shedding"
STATES = (NORMAL, WARNING, SHEDDING)
FIRST_LANE = sorted(kind for kind, lane in LANES.items() if lane == 0)


@dataclass(frozen=True)
class Pressure:
    state: str
    oldest_due_seconds: float  # of the first lane, its dependency up
    # The same, counting only interactive work (orders placed one by one), which is claimed
    # before bulk work: a burst of bulk intake pushes back on bulk intake only.
    interactive: Pressure | None = None

    @property
    def retry_after(self) -> int:
        """Seconds a refused client should wait: longer the further behind we are (≤ 30)."""
        return max(1, min(30, round(self.oldest_due_seconds / 10)))

    def of(self, priority: int) -> Pressure:
        """The pressure that intake of this priority answers to."""
        return (self.interactive or self) if priority == Priority.INTERACTIVE else self

    def as_dict(self) -> dict[str, Any]:
        view: dict[str, Any] = {
            "state": self.state,
            "oldest_due_seconds": round(self.oldest_due_seconds, 3),
        }
        if self.interactive is not None:
            view["interactive"] = self.interactive.as_dict()
            view["lanes"] = [
                sorted(k for k, n in LANES.items() if n == lane) for lane in range(4)
            ] + [["alerts, relay, anchors, redrives"]]
        return view


def measure(session: Session, warning_seconds: float, shedding_seconds: float) -> Pressure:
    """The pressure now, from the database (two small reads)."""
    down = set(session.scalars(select(Dependency.name).where(Dependency.state == "open")))
    kinds = [k for k in FIRST_LANE if DEPENDENCY_OF.get(k) not in down]
    at = now()
    oldest: dict[int, Any] = {}
    if kinds:
        rows = session.execute(
            select(Task.priority, func.min(Task.run_at))
            .where(Task.status == TaskStatus.READY, Task.run_at <= at, Task.kind.in_(kinds))
            .group_by(Task.priority)
        )
        oldest = {priority: run_at for priority, run_at in rows}

    def pressure(ages: list[Any]) -> Pressure:
        age = max(0.0, (at - min(ages)).total_seconds()) if ages else 0.0
        if age >= shedding_seconds:
            return Pressure(SHEDDING, age)
        return Pressure(WARNING if age >= warning_seconds else NORMAL, age)

    overall = pressure(list(oldest.values()))
    interactive = pressure([oldest[Priority.INTERACTIVE]] if Priority.INTERACTIVE in oldest else [])
    return Pressure(overall.state, overall.oldest_due_seconds, interactive)


class Gauge:
    """This process's view of the pressure: measured at most every `refresh_seconds`."""

    def __init__(
        self,
        db: Database,
        warning_seconds: float,
        shedding_seconds: float,
        refresh_seconds: float = 1.0,
    ) -> None:
        self.db = db
        self.warning_seconds = warning_seconds
        self.shedding_seconds = shedding_seconds
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._pressure = Pressure(NORMAL, 0.0)
        self._at = float("-inf")

    def stale(self) -> bool:
        """Whether `current` would read the database (async callers then use a thread)."""
        return time.monotonic() - self._at >= self.refresh_seconds

    def current(self) -> Pressure:
        with self._lock:
            if time.monotonic() - self._at < self.refresh_seconds:
                return self._pressure
            self._at = time.monotonic()
            before = self._pressure
        try:
            with self.db.read() as session:
                pressure = measure(session, self.warning_seconds, self.shedding_seconds)
        except Exception as exc:  # the database is struggling: keep the last view, say so
            log.warning("backpressure.unmeasured", error=describe(exc))
            return before
        with self._lock:
            self._pressure = pressure
        if pressure.state != before.state:
            log.warning(
                "backpressure.changed",
                state=pressure.state,
                previous=before.state,
                oldest_due_seconds=round(pressure.oldest_due_seconds, 1),
            )
        return pressure
