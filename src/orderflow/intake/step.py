"""The `intake` step: a redriven intake dead letter tries its placement again.

It calls nothing outside, so all of it happens in `complete`, inside the worker's transaction:
the order and the task's end commit together. Refused again, it is a dead letter again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from orderflow.errors import DomainError
from orderflow.intake.group import place
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
        if isinstance(parsed, Refusal):
            error = PermanentError if parsed.error_class == "permanent" else StepError
            raise error(parsed.reason, http_status=parsed.status)
        try:
            order_id, _ = place(session, parsed, actor=ACTOR)
        except DomainError as exc:
            reason = f"{exc.status_code} {exc.code}: {exc.message}"
            raise PermanentError(reason, http_status=exc.status_code) from None
        # The dead letter now names the order it became (or the one its key already had).
        session.execute(update(Task).where(Task.id == task.id).values(order_id=order_id))
