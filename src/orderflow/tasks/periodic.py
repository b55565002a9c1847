"""A periodic job as a task: one row (one key) for the whole cluster, rescheduled after each run.

Whatever the number of workers, each job runs once per period; a crashed run is taken over
like any other task. `in_transaction` runs in the worker's commit transaction; `outside` runs
with no transaction open (for jobs that manage their own, or touch files).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from orderflow.clock import now
from orderflow.tasks import queue
from orderflow.tasks.queue import ClaimedTask
from orderflow.tasks.step import Reschedule


class Periodic:
    dependency = None
    quiet = True  # a successful run is not worth an attempt record (failures still are)

    def __init__(
        self,
        kind: str,
        every: float,
        *,
        in_transaction: Callable[[Session], object] | None = None,
        outside: Callable[[], object] | None = None,
    ) -> None:
        self.kind = kind
        self.every = every
        self._in_transaction = in_transaction
        self._outside = outside

    def schedule(self, session: Session) -> None:
        """Make sure the job exists (a no-op when it already does)."""
        queue.enqueue(session, self.kind, f"periodic:{self.kind}")

    def prepare(self, session: Session, task: ClaimedTask) -> dict[str, Any]:
        return {}

    def perform(self, work: dict[str, Any]) -> None:
        if self._outside is not None:
            self._outside()

    def complete(self, session: Session, task: ClaimedTask, result: None) -> Reschedule:
        if self._in_transaction is not None:
            self._in_transaction(session)
        return Reschedule(now() + timedelta(seconds=self.every))
