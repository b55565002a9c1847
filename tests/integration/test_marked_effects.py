"""Effects without an idempotency key (an e-mail, a Slack message): the "performed" mark is
committed the instant the effect happens, so a worker that dies before its batch commits
makes the next one skip the effect instead of repeating it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from orderflow.db import Database
from orderflow.tasks import queue
from orderflow.tasks.errors import TransientError
from orderflow.tasks.models import Task
from orderflow.tasks.queue import ClaimedTask
from orderflow.tasks.retry import RetryPolicy
from orderflow.tasks.worker import Worker

POLICY = RetryPolicy(base_seconds=0.05, max_seconds=0.1)


class Messenger:
    """Sends a "message" (appends to `sent`) and marks it, as the e-mail step does."""

    kind = "message"
    dependency = None
    marks_performed = True

    def __init__(self, db: Database) -> None:
        self.db = db
        self.sent: list[int] = []
        self.seen_before_mark: list[bool] = []
        self.seen_after_mark: list[bool] = []
        self.fail_before_sending = False
        self.hang_after_mark = threading.Event()  # cleared: the "process" dies after the mark
        self.hang_after_mark.set()

    def prepare(self, session: Session, task: ClaimedTask) -> int | None:
        return None if queue.performed(task) else task.id

    def perform(self, task_id: int, mark: Callable[[], None] | None = None) -> int:
        assert mark is not None
        self.seen_before_mark.append(self._marked(task_id))
        if self.fail_before_sending:
            raise TransientError("SMTP 421: try again later")
        self.sent.append(task_id)
        mark()
        self.seen_after_mark.append(self._marked(task_id))
        self.hang_after_mark.wait(10)
        return task_id

    def complete(self, session: Session, task: ClaimedTask, result: Any) -> None:
        return None

    def _marked(self, task_id: int) -> bool:
        """What any other connection sees of the mark (committed data only)."""
        with self.db.read() as session:
            payload = session.scalar(select(Task.payload).where(Task.id == task_id))
        return queue.PERFORMED in (payload or {})


def _worker(db: Database, step: Messenger, name: str, lease: float = 5.0) -> Worker:
    return Worker(
        db, {"message": step}, retry=POLICY, lease_seconds=lease, batch_size=10, name=name
    )


def _enqueue(db: Database, count: int) -> None:
    with db.transaction() as session:
        for i in range(count):
            queue.enqueue(session, "message", f"message-{i}")


def test_the_mark_is_committed_the_instant_the_effect_happens(db: Database) -> None:
    """Before `mark()` no other connection sees the mark; right after it, all do (not at the
    batch's commit); every message is sent once."""
    _enqueue(db, 3)
    step = Messenger(db)
    assert _worker(db, step, "w").run_once() == 3
    assert sorted(step.sent) == sorted(set(step.sent)) and len(step.sent) == 3
    assert step.seen_before_mark == [False] * 3
    assert step.seen_after_mark == [True] * 3


def test_an_effect_that_failed_before_sending_leaves_no_mark_and_is_retried(
    db: Database,
) -> None:
    """A refused send rolls its prepared mark back: the retry sends the message, once."""
    _enqueue(db, 1)
    step = Messenger(db)
    step.fail_before_sending = True
    worker = _worker(db, step, "w")
    assert worker.run_once() == 1
    assert step.sent == [] and not step._marked(_task_id(db))
    step.fail_before_sending = False
    time.sleep(0.15)
    assert worker.run_once() == 1
    assert len(step.sent) == 1 and step._marked(_task_id(db))


def test_a_worker_dying_after_the_effect_is_not_repeated_by_the_next(db: Database) -> None:
    """The first worker sends and marks, then never commits its batch (as if killed); once its
    lease expires the next worker takes the task over and does not send it again."""
    _enqueue(db, 1)
    dying = Messenger(db)
    dying.hang_after_mark.clear()
    thread = threading.Thread(target=_worker(db, dying, "dying", lease=0.3).run_once)
    thread.start()
    deadline = time.monotonic() + 10
    while not dying.seen_after_mark and time.monotonic() < deadline:
        time.sleep(0.01)
    assert dying.sent and dying.seen_after_mark == [True]
    time.sleep(0.35)  # the lease runs out while the first worker is still "dead"
    survivor = Messenger(db)
    assert _worker(db, survivor, "survivor").run_once() == 1
    assert survivor.sent == []  # taken over, and not sent again
    with db.read() as session:
        assert session.scalar(select(Task.status).where(Task.key == "message-0")) == "done"
    dying.hang_after_mark.set()
    thread.join(10)


def _task_id(db: Database) -> int:
    with db.read() as session:
        task_id = session.scalar(select(Task.id).where(Task.key == "message-0"))
    assert task_id is not None
    return task_id
