"""The `intake` step: a redriven intake dead letter tries its placement again.

It calls nothing outside, so all of it happens in `complete`, inside the worker's transaction:
the order and the task's end commit together. Refused again, it is a dead letter again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from orderflow.intake.group import place_all
from orderflow.intake.messages import Refusal, parse, raw_body
from orderflow.intake.refusals import KIND
from orderflow.tasks.errors import PermanentError, StepError
from orderflow.tasks.models import Task
from orderflow.tasks.queue import ClaimedTask

ACTOR = "intake:redrive"


class IntakeStep:
    kind = KIND
    dependency = None

    def prepare(self, session: Session, task: ClaimedTask) -> dict[str, Any]:
        return dict(task.payload)

    def perform(self, work: dict[str, Any]) -> dict[str, Any]:
        return work

    def complete(self, session: Session, task: ClaimedTask, payload: dict[str, Any]) -> None:
        parsed = parse(raw_body(payload))
        result = (
            parsed if isinstance(parsed, Refusal) else place_all(session, [parsed], actor=ACTOR)[0]
        )
        if isinstance(result, Refusal):  # refused again: a dead letter again, with this attempt
            error = PermanentError if result.error_class == "permanent" else StepError
            raise error(result.reason, http_status=result.status)
        # The dead letter now names the order it became (or the one its key already had).
        session.execute(update(Task).where(Task.id == task.id).values(order_id=result.order_id))
