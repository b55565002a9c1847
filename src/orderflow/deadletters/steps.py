"""The bulk-redrive step: a batch of dead letters at a time, paced, resumable after a crash."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from orderflow.clock import now
from orderflow.deadletters import service
from orderflow.deadletters.queries import Filter, matching
from orderflow.tasks.models import Task
from orderflow.tasks.queue import ClaimedTask
from orderflow.tasks.step import Reschedule


class RedriveStep:
    kind = service.REDRIVE
    dependency = None  # calls nothing outside; its redriven tasks are paced by their own

    def prepare(self, session: Session, task: ClaimedTask) -> dict[str, Any]:
        return dict(task.payload)

    def perform(self, work: dict[str, Any]) -> dict[str, Any]:
        return work

    def complete(
        self, session: Session, task: ClaimedTask, progress: dict[str, Any]
    ) -> Reschedule | None:
        batch = [
            t
            for t in matching(
                session,
                Filter.from_dict(progress["filter"]),
                after_id=progress["after_id"],
                limit=progress["batch"],
            )
            if t.id <= progress["up_to_id"]
        ]
        for dead in sorted(batch, key=lambda t: (t.order_id or 0, t.id)):  # global lock order
            service.redrive(
                session, dead.id, actor=progress["actor"], four_eyes=progress.get("four_eyes")
            )
        progress = {
            **progress,
            "after_id": batch[-1].id if batch else progress["up_to_id"],
            "redriven": progress["redriven"] + len(batch),
        }
        # The progress is the task's own payload: a restart carries on where it stopped.
        session.execute(update(Task).where(Task.id == task.id).values(payload=progress))
        if not batch or progress["after_id"] >= progress["up_to_id"]:
            return None
        return Reschedule(now() + timedelta(seconds=progress["pace_seconds"]))
