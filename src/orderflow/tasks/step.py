"""What a step is: read what it needs, do the one outside effect, record what came of it.

The three phases keep orchestration apart from side effects (as Temporal separates workflows
from activities): `prepare` and `complete` touch only the database, inside transactions the
worker owns; `perform` touches only the outside world, outside any transaction, and must be
safe to repeat (it carries an idempotency key derived from the order and the step).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from orderflow.tasks.queue import ClaimedTask


@dataclass(frozen=True)
class Reschedule:
    """`complete` returns this for recurring work: due again at `run_at`."""

    run_at: datetime


class Step(Protocol):
    @property
    def kind(self) -> str:
        """The task kind this step handles."""

    @property
    def dependency(self) -> str | None:
        """The outside service `perform` calls; its health gates the claiming of these tasks."""

    def prepare(self, session: Session, task: ClaimedTask) -> Any | None:
        """Read what `perform` needs. None means there is nothing to do: the task is done."""

    def perform(self, work: Any) -> Any:
        """The outside effect. Raises TransientError / PermanentError; anything else is poison."""

    def complete(self, session: Session, task: ClaimedTask, result: Any) -> Reschedule | None:
        """Record the result: state transition, history, next tasks, events."""


# A step may say what of its order `prepare` reads (`reads`, a subset of
# `orders.queries.ORDER_READS`): the worker loads only that for the batch; without it, all of it.
#
# A step whose outside effect carries no idempotency key (an e-mail, a Slack message) sets
# `marks_performed = True`: the worker then calls `perform(work, mark=…)`, and the step calls
# `mark()` the moment the effect happened (the SMTP server accepted the message), which commits
# `queue.mark_performed` on its own; such effects go one at a time, each marked before the
# next starts, and `prepare` must not repeat the effect once `queue.performed(task)` says so.
# A crash can then repeat only the one message whose mark was being committed at that instant,
# never a batch's.
