"""The durable task table and worker loop: leases, takeover, retries, dead letters, batches."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from orderflow.clock import now
from orderflow.db import Database
from orderflow.tasks import queue
from orderflow.tasks.errors import TransientError
from orderflow.tasks.models import Task, TaskAttempt
from orderflow.tasks.queue import ClaimedTask
from orderflow.tasks.retry import RetryPolicy
from orderflow.tasks.worker import Worker

POLICY = RetryPolicy(base_seconds=0.05, max_seconds=0.2)


class Probe:
    """A step whose perform does what the payload says; complete leaves a row behind."""

    kind = "probe"
    dependency = None

    def __init__(self) -> None:
        self.release = threading.Event()
        self.release.set()

    def prepare(self, session: Session, task: ClaimedTask) -> dict[str, Any]:
        return dict(task.payload)

    def perform(self, work: dict[str, Any]) -> dict[str, Any]:
        self.release.wait(10)
        if work.get("raise") == "transient":
            raise TransientError("carrier said 429", http_status=429, retry_after=30)
        if work.get("raise") == "500":
            raise TransientError("carrier said 500", http_status=500)
        if work.get("raise") == "503":
            raise TransientError("carrier said 503", http_status=503)
        if work.get("raise") == "bug":
            raise ValueError("a bug in perform")
        return work

    def complete(self, session: Session, task: ClaimedTask, result: dict[str, Any]) -> None:
        if result.get("raise") == "bug-in-complete":
            raise KeyError("a bug in complete")
        # Leave evidence of who completed it, in the same transaction.
        queue.enqueue(session, "evidence", f"done:{task.key}:{task.lease_token}")


def _worker(
    db: Database, probe: Probe, name: str, lease: float = 5.0, max_attempts: int | None = None
) -> Worker:
    return Worker(
        db,
        {"probe": probe},
        retry=POLICY,
        lease_seconds=lease,
        batch_size=10,
        concurrency=4,
        name=name,
        max_attempts=max_attempts,
    )


def _enqueue(db: Database, *payloads: dict[str, Any]) -> None:
    with db.transaction() as session:
        for i, payload in enumerate(payloads):
            queue.enqueue(session, "probe", f"probe-{i}", payload=payload)


def _task(db: Database, key: str) -> Task:
    with db.read() as session:
        task = session.scalar(select(Task).where(Task.key == key))
        assert task is not None
        return task


def _evidence(db: Database) -> list[str]:
    with db.read() as session:
        return sorted(session.scalars(select(Task.key).where(Task.kind == "evidence")))


def test_enqueueing_the_same_key_twice_queues_one_task(db: Database) -> None:
    """The task key is unique: the same work is never queued twice."""
    with db.transaction() as session:
        queue.enqueue(session, "probe", "same")
        queue.enqueue(session, "probe", "same")
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Task)) == 1


def test_a_crashed_workers_task_is_taken_over_when_its_lease_expires(db: Database) -> None:
    """Claimed and never finished (kill -9): invisible until the lease ends, then redone once."""
    _enqueue(db, {})
    with db.transaction() as session:
        [claimed] = queue.claim(session, token="crashed/1", limit=10, lease_seconds=0.3)
    survivor = _worker(db, Probe(), "survivor")
    assert survivor.run_once() == 0  # still leased to the crashed worker
    time.sleep(0.35)
    assert survivor.run_once() == 1
    task = _task(db, "probe-0")
    assert (task.status, task.attempts) == ("done", 2)
    with db.transaction() as session:
        assert not queue.finish(session, claimed)  # the crashed worker's token is worthless
    assert [e.split(":")[-1] for e in _evidence(db)] == ["survivor/2"]  # its second batch


def test_a_worker_that_lost_its_lease_discards_its_results(db: Database) -> None:
    """A too-slow worker's late outcome is dropped; only the takeover's is recorded."""
    _enqueue(db, {})
    slow_probe = Probe()
    slow_probe.release.clear()
    slow = _worker(db, slow_probe, "slow", lease=0.3)
    thread = threading.Thread(target=slow.run_once)
    thread.start()
    time.sleep(0.5)  # the slow worker is stuck in perform past its lease
    assert _worker(db, Probe(), "fast").run_once() == 1
    slow_probe.release.set()
    thread.join(10)
    assert [e.split(":")[-1] for e in _evidence(db)] == ["fast/1"]
    with db.read() as session:
        attempts = session.scalars(select(TaskAttempt.worker)).all()
    assert attempts == ["fast"]


def test_transient_failures_wait_for_retry_after_and_keep_evidence(db: Database) -> None:
    """A 429 with Retry-After: 30 puts the task back no sooner than 30 s, with its error."""
    _enqueue(db, {"raise": "transient"})
    before = now()
    _worker(db, Probe(), "w").run_once()
    task = _task(db, "probe-0")
    assert task.status == "ready"
    assert task.error_class == "transient"
    assert "429" in (task.last_error or "")
    assert task.run_at >= before + timedelta(seconds=0.2)  # capped at retry_max, not 30 s
    assert task.first_failed_at is not None
    with db.read() as session:
        [attempt] = session.scalars(select(TaskAttempt)).all()
    assert (attempt.outcome, attempt.http_status, attempt.attempt) == ("transient", 429, 1)


def test_poison_is_dead_lettered_at_once_without_harming_the_batch(db: Database) -> None:
    """A bug in perform or in complete buries that task; its batch-mates still commit."""
    _enqueue(db, {"raise": "bug"}, {}, {"raise": "bug-in-complete"}, {})
    assert _worker(db, Probe(), "w").run_once() == 4
    statuses = {k: _task(db, k).status for k in ("probe-0", "probe-1", "probe-2", "probe-3")}
    assert statuses == {"probe-0": "dead", "probe-1": "done", "probe-2": "dead", "probe-3": "done"}
    bug = _task(db, "probe-0")
    assert bug.error_class == "poison"
    assert bug.last_error == "ValueError: a bug in perform"
    assert "KeyError" in (_task(db, "probe-2").last_error or "")
    assert len(_evidence(db)) == 2


def test_concurrent_claimers_never_take_the_same_task(db: Database) -> None:
    """Four claimers racing over 300 tasks: each task claimed exactly once."""
    with db.transaction() as session:
        for i in range(300):
            queue.enqueue(session, "probe", f"t-{i}")

    def claim_all(n: int) -> list[int]:
        mine: list[int] = []
        while True:
            with db.transaction() as session:
                got = queue.claim(session, token=f"c{n}", limit=7, lease_seconds=60)
            if not got:
                return mine
            mine.extend(t.id for t in got)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(claim_all, range(4)))
    claimed = [i for r in results for i in r]
    assert len(claimed) == 300
    assert len(set(claimed)) == 300


def test_a_request_failing_while_its_service_is_up_runs_out_of_attempts(db: Database) -> None:
    """A 500 for this request, three times: dead as 'exhausted'; a 503 (an outage) never is."""
    _enqueue(db, {"raise": "500"}, {"raise": "503"})
    worker = _worker(db, Probe(), "w", max_attempts=3)
    with db.transaction() as session:
        session.execute(update(Task).values(attempts=2))  # two earlier tries
    worker.run_once()
    exhausted, outage = _task(db, "probe-0"), _task(db, "probe-1")
    assert (exhausted.status, exhausted.error_class) == ("dead", "exhausted")
    assert (exhausted.last_error or "").startswith("gave up after 3 attempts")
    assert (outage.status, outage.error_class) == ("ready", "transient")


def test_an_idle_worker_wakes_when_tasks_are_queued_on_postgresql(db: Database) -> None:
    """PostgreSQL: a worker idling on a 30 s interval claims a new task within a second of its
    commit (LISTEN/NOTIFY); SQLite has no notifications, so the task waits for the interval."""
    worker = Worker(
        db, {"probe": Probe()}, retry=POLICY, lease_seconds=5, idle_seconds=30, name="idle"
    )
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        time.sleep(1.0)  # the worker found nothing and went to sleep
        queued = time.monotonic()
        _enqueue(db, {})
        while _task(db, "probe-0").status != "done" and time.monotonic() - queued < 3:
            time.sleep(0.02)
        done = _task(db, "probe-0").status == "done"
        assert done is not db.is_sqlite, "PostgreSQL wakes the worker; SQLite waits 30 s"
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive(), "a stop is seen within a second while listening"
