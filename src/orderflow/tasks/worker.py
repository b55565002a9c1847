"""The worker loop: claim a batch, run its outside effects concurrently, commit it as one.

1. claim up to `batch_size` due tasks with a lease (one statement, one transaction);
2. `prepare` each (one read transaction for the batch);
3. `perform` them concurrently on a thread pool (no transaction is open meanwhile);
4. commit every outcome in one transaction, each under a savepoint: a task's transition, its
   history entry, its next task and its attempt record land together or not at all.

A worker killed anywhere loses nothing: its claimed tasks stay `running` until their lease
expires, then any worker claims them again and repeats the (idempotent) outside effect.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from orderflow.audit import chain
from orderflow.backpressure import Gauge
from orderflow.clock import now
from orderflow.db import Database
from orderflow.dependencies import health
from orderflow.dependencies.policy import BURST_SECONDS, DependencyPolicy
from orderflow.observability.metrics import STEP_SECONDS
from orderflow.orders import queries, service
from orderflow.orders.models import order_reference
from orderflow.orders.workflow import lane_of
from orderflow.tasks import queue
from orderflow.tasks.errors import (
    NOT_PROCESSED_STATUSES,
    ErrorClass,
    StepError,
    TransientError,
    classify,
    describe,
    exhausts,
)
from orderflow.tasks.queue import ClaimedTask
from orderflow.tasks.retry import RetryPolicy
from orderflow.tasks.step import Reschedule, Step
from orderflow.tasks.wakeup import Wakeup

log = structlog.get_logger("orderflow.worker")

_NOTHING = object()
MAX_SLOT_WAIT = (
    2 * BURST_SECONDS
)  # slots are handed out at most a burst ahead; a bound all the same


@dataclass
class _Run:
    task: ClaimedTask
    work: Any = _NOTHING
    result: Any = None
    error: BaseException | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    not_before: datetime | None = None  # its slot on the dependency's pacing schedule


class Worker:
    def __init__(
        self,
        db: Database,
        steps: Mapping[str, Step],
        *,
        retry: RetryPolicy,
        lease_seconds: float,
        batch_size: int = 32,
        concurrency: int = 16,
        idle_seconds: float = 0.5,
        name: str | None = None,
        dependencies: Mapping[str, DependencyPolicy] | None = None,
        max_attempts: int | None = None,
        pressure: Gauge | None = None,
        strict_lanes_seconds: float = 0.5,
    ) -> None:
        # Payments due longer than `strict_lanes_seconds`: claim lane by lane (payments first).
        self.pressure = pressure
        self.strict_lanes_seconds = strict_lanes_seconds
        self.db = db
        self.steps = steps
        self.dependencies = dict(dependencies or {})
        self.max_attempts = max_attempts
        # Claim groups: the kinds of each dependency (None: steps calling nothing outside), in
        # lanes: a dependency's lower lane is claimed first (bookings before tracking polls).
        groups: dict[str | None, dict[int, list[str]]] = {}
        for kind, step in steps.items():
            dependency = step.dependency if step.dependency in self.dependencies else None
            groups.setdefault(dependency, {}).setdefault(lane_of(kind), []).append(kind)
        self._groups = [(dep, [lanes[n] for n in sorted(lanes)]) for dep, lanes in groups.items()]
        self._dependency_of = {
            kind: dep
            for dep, lanes in groups.items()
            if dep
            for kinds in lanes.values()
            for kind in kinds
        }
        # What the last claim saw of each dependency, and when a success was last written:
        # a healthy dependency's success is written at most once a second, not every batch.
        self._seen: dict[str, tuple[str, int, float]] = {}
        self._success_written: dict[str, float] = {}
        self.retry = retry
        self.lease_seconds = lease_seconds
        self.batch_size = batch_size
        self.idle_seconds = idle_seconds
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="orderflow-step")
        self._mark_lock = threading.RLock()
        self._mark_connection: Connection | None = None
        self._unmarked = False  # an effect happened whose mark failed: hold the next one
        self._batches = 0

    def run(self, stop: threading.Event) -> None:
        """Work until `stop` is set; the batch in hand is always finished first."""
        log.info("worker.started", worker=self.name)
        wakeup = Wakeup(self.db)
        while not stop.is_set():
            try:
                done = self.run_once()
            except Exception:
                log.exception("worker.batch_failed", worker=self.name)
                done = 0
            if done:
                wakeup.busy()
            elif not wakeup.listen():  # just started listening: look once more first
                wakeup.wait(self.idle_seconds, stop)
        wakeup.close()
        self._pool.shutdown(wait=True)
        with self._mark_lock:
            if self._mark_connection is not None:
                self._mark_connection.close()
        log.info("worker.stopped", worker=self.name)

    def run_once(self) -> int:
        """Claim, perform and commit one batch; returns how many tasks it took."""
        self._batches += 1
        self._unmarked = False  # the last batch recorded its effects (or they are retried)
        token = f"{self.name}/{self._batches}"
        behind = (
            self.pressure is not None
            and self.pressure.current().oldest_due_seconds >= self.strict_lanes_seconds
        )
        with self.db.transaction() as session:
            claimed, slots = self._claim(session, token, strict_lanes=behind)
        if not claimed:
            return 0
        runs = [_Run(task, not_before=slots.get(task.id)) for task in claimed]
        with self.db.read() as session:
            reads: dict[int, set[str]] = {}
            for run in runs:
                if run.task.order_id:
                    step_reads = getattr(self.steps[run.task.kind], "reads", queries.ORDER_READS)
                    reads.setdefault(run.task.order_id, set()).update(step_reads)
            loaded = queries.preload(session, reads)
            for run in runs:
                self._prepare(session, run)
            del loaded
        list(self._pool.map(self._perform, [r for r in runs if r.work is not _NOTHING]))
        # One global lock order (by order id) for every worker's commit, so two batches that
        # touch the same orders queue behind each other instead of deadlocking.
        runs.sort(key=lambda r: (r.task.order_id or 0, r.task.id))
        try:
            self._commit_batch(runs)
        except Exception as exc:
            # Something in the batch failed to record (a bug in one step, a deadlock): record
            # task by task instead, each under its own savepoint, so it spoils nothing else.
            log.warning("worker.batch_fallback", worker=self.name, error=describe(exc))
            with self.db.transaction() as session:
                for run in runs:
                    self._commit(session, run)
        # Advisory, so in its own short transaction: never holds up or rolls back the batch.
        reports = self._health_reports(runs)
        if reports:
            with self.db.transaction() as session:
                self._report_health(session, reports)
        return len(runs)

    def _claim(
        self, session: Session, token: str, strict_lanes: bool = False
    ) -> tuple[list[ClaimedTask], dict[int, datetime]]:
        """Claim per dependency: none while its breaker is open (but a probe), paced at its rate.

        Dependencies that could take a whole batch are claimed together, oldest first, in one
        statement; one that is rationed (paced, or open with a probe due) is claimed on its
        own, lower lanes first (bookings before tracking polls).
        """
        rows = health.lock_all(session, sorted(self.dependencies))  # one lock order for all
        self._seen = {n: (r.state, r.consecutive_failures, r.rate_factor) for n, r in rows.items()}
        claimed: list[ClaimedTask] = []
        unrationed: list[str] = []
        # Rotate which group goes first, so one rationed dependency cannot starve the others.
        start = self._batches % len(self._groups) if self._groups else 0
        for dependency, lanes in self._groups[start:] + self._groups[:start]:
            policy = self.dependencies.get(dependency) if dependency else None
            limit = self.batch_size
            if policy is not None:
                limit = health.budget(session, policy, limit, rows.get(policy.name)).limit
            if limit >= self.batch_size:
                unrationed += [kind for kinds in lanes for kind in kinds]
                continue
            got: list[ClaimedTask] = []
            for kinds in lanes:
                room = min(limit, self.batch_size - len(claimed)) - len(got)
                if room <= 0:
                    break
                got += self._claim_kinds(session, token, room, kinds)
            claimed += got
        room = self.batch_size - len(claimed)
        if unrationed and room > 0 and strict_lanes:
            # Behind on payments: take the lanes strictly in order (low lanes wait their turn).
            for lane in sorted({lane_of(kind) for kind in unrationed}):
                room = self.batch_size - len(claimed)
                if room > 0:
                    kinds = [kind for kind in unrationed if lane_of(kind) == lane]
                    claimed += self._claim_kinds(session, token, room, kinds)
        elif unrationed and room > 0:
            claimed += self._claim_kinds(session, token, room, unrationed)
        # Each paced call gets its own slot on the shared schedule and goes out then, not with
        # the rest of its batch: the dependency sees the rate, not bursts of it.
        slots: dict[int, datetime] = {}
        calls = Counter(self._dependency_of.get(task.kind) for task in claimed)
        for dependency, count in sorted((d, n) for d, n in calls.items() if d is not None):
            schedule = health.consume(session, self.dependencies[dependency], count)
            if schedule is not None:
                first, gap = schedule
                mine = [t for t in claimed if self._dependency_of.get(t.kind) == dependency]
                slots.update((t.id, first + i * gap) for i, t in enumerate(mine))
        return claimed, slots

    def _claim_kinds(
        self, session: Session, token: str, limit: int, kinds: list[str]
    ) -> list[ClaimedTask]:
        return queue.claim(
            session, token=token, limit=limit, lease_seconds=self.lease_seconds, kinds=kinds
        )

    def _health_reports(self, runs: list[_Run]) -> dict[str, list[_Run]]:
        """The dependencies this batch called whose health is worth writing down."""
        seen: dict[str, list[_Run]] = {}
        for run in runs:
            step = self.steps.get(run.task.kind)
            called = run.work is not None and run.work is not _NOTHING
            if step is not None and step.dependency in self.dependencies and called:
                seen.setdefault(str(step.dependency), []).append(run)
        at = time.monotonic()
        for name, batch in list(seen.items()):
            all_answered = all(_answered(r.error) for r in batch)
            healthy = self._seen.get(name) == (health.CLOSED, 0, 1.0)
            if all_answered and healthy and at - self._success_written.get(name, 0.0) < 1.0:
                del seen[name]  # closed, no failures, full pace, success written just now
        return seen

    def _report_health(self, session: Session, seen: dict[str, list[_Run]]) -> None:
        """What this batch learnt about each dependency: up, down, or asking us to slow down."""
        health.lock_all(session, sorted(seen))
        for name, batch in sorted(seen.items()):
            policy = self.dependencies[name]
            answered = [r for r in batch if _answered(r.error)]
            throttled = [
                r.error
                for r in batch
                if isinstance(r.error, TransientError) and r.error.http_status == 429
            ]
            down = [r.error for r in batch if r.error is not None and _found_down(r.error)]
            if answered:
                health.record_success(session, name, throttled=bool(throttled))
                self._success_written[name] = time.monotonic()
            elif down:
                health.record_failure(session, policy, describe(down[-1]), calls=len(down))
            if throttled:
                retry_after = max(
                    (e.retry_after or 0.0) for e in throttled if isinstance(e, TransientError)
                )
                health.throttle(session, policy, retry_after or None, len(throttled) / len(batch))

    def _step(self, task: ClaimedTask) -> Step:
        step = self.steps.get(task.kind)
        if step is None:
            raise LookupError(f"no step handles tasks of kind {task.kind!r}")
        return step

    def _prepare(self, session: Session, run: _Run) -> None:
        try:
            run.work = self._step(run.task).prepare(session, run.task)
        except Exception as exc:
            run.error = exc

    def _perform(self, run: _Run) -> None:
        if run.not_before is not None and run.work is not None:
            wait = (run.not_before - now()).total_seconds()
            if wait > 0:
                time.sleep(min(wait, MAX_SLOT_WAIT))
        run.started_at = now()
        try:
            if run.work is not None:
                step = self._step(run.task)
                if getattr(step, "marks_performed", False):
                    # The step calls `mark` the moment the effect happened (see `Step`).
                    with self._marked_effect(run.task) as mark:
                        run.result = step.perform(run.work, mark=mark)  # type: ignore[call-arg]
                else:
                    run.result = step.perform(run.work)
        except Exception as exc:
            run.error = exc
        run.finished_at = now()

    @contextmanager
    def _marked_effect(self, task: ClaimedTask) -> Iterator[Callable[[], None]]:
        """Around an outside effect without an idempotency key (an e-mail): one at a time, and
        `mark()` commits the task's "performed" mark the moment the effect happened, so a kill
        can repeat only the effect whose mark was being committed at that instant.

        On a connection of its own in autocommit mode (no wait for the pool). On PostgreSQL
        the mark is one UPDATE after the effect (one round trip, its own commit). On SQLite the
        database's one write lock and the UPDATE are taken before the effect, so no other
        writer can hold the mark up and only COMMIT is left after it (other writers wait one
        SMTP exchange at most); without the lock the effect is not attempted. After a failed
        mark no further such effect starts until this batch has recorded its own.
        """
        with self._mark_lock:
            if self._unmarked:
                raise TransientError("an earlier effect's mark failed: sent after this batch")
            connection = self._mark_conn()
            staged = self.db.engine.dialect.name == "sqlite"
            at = ""
            if staged:
                try:
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                    at = queue.mark_performed(connection, task)
                except Exception as exc:
                    self._drop_mark_connection()
                    reason = f"could not prepare the effect's mark: {describe(exc)}"
                    raise TransientError(reason) from exc
            marked = False

            def mark() -> None:
                nonlocal marked
                marked = True
                try:
                    if staged:
                        connection.exec_driver_sql("COMMIT")
                        stamp = at
                    else:
                        stamp = queue.mark_performed(connection, task)
                    task.payload[queue.PERFORMED] = stamp  # later writes of the payload keep it
                except Exception:  # the effect happened all the same: recorded with the batch
                    log.warning("task.mark_performed_failed", task_id=task.id, kind=task.kind)
                    self._unmarked = True
                    self._drop_mark_connection()

            try:
                yield mark
            finally:
                if staged and not marked:  # the effect failed before its mark: nothing to keep
                    try:
                        connection.exec_driver_sql("ROLLBACK")
                    except Exception:
                        self._drop_mark_connection()

    def _mark_conn(self) -> Connection:
        if self._mark_connection is None:
            self._mark_connection = self.db.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            )
        return self._mark_connection

    def _drop_mark_connection(self) -> None:
        if self._mark_connection is not None:
            with suppress(Exception):
                self._mark_connection.close()
            self._mark_connection = None

    def _commit_batch(self, runs: list[_Run]) -> None:
        """Record the whole batch in one transaction with one statement per table.

        Order work is deferred (see `orderflow.deferred`): the batch's tasks and orders are
        locked up front, each step records its outcome in memory where it can, and the rows
        are written at the end. Work of no order (periodic jobs, alerts) follows, one
        savepoint each. Any failure rolls everything back and the caller records task by task.
        """
        orders = [r for r in runs if r.task.order_id is not None]
        others = [r for r in runs if r.task.order_id is None]
        with self.db.transaction() as session:
            with service.deferred_writes(session) as flush:
                mine = queue.owned(session, [r.task for r in orders])
                chain.lock_heads(
                    session,
                    [r.task.order_id for r in orders if r.task.id in mine],  # type: ignore[misc]
                    whole_rows=True,
                )
                touched: set[int | None] = set()
                for run in orders:
                    if run.task.id not in mine:
                        log.warning("task.lease_lost", task_id=run.task.id, worker=self.name)
                        continue
                    if run.task.order_id in touched:
                        flush()  # a second task of one order reads what the first wrote
                    touched.add(run.task.order_id)
                    self._apply(session, run)
            for run in others:
                self._commit(session, run)

    def _commit(self, session: Session, run: _Run) -> None:
        task = run.task
        try:
            with session.begin_nested():
                self._apply(session, run)
        except _LeaseLost:
            # Another worker took this task over; its outcome, not ours, will be recorded.
            log.warning("task.lease_lost", task_id=task.id, kind=task.kind, worker=self.name)
        except Exception as exc:
            error_class = classify(exc)
            with session.begin_nested():
                if error_class is ErrorClass.TRANSIENT:
                    # Our own database hiccuped (a deadlock, a restart): the outside effect
                    # happened, so come back soon and record it then (idempotently).
                    log.warning(
                        "worker.complete_retry",
                        task_id=task.id,
                        kind=task.kind,
                        error=describe(exc),
                    )
                    queue.retry(session, task, delay=self.retry.delay(1), error=describe(exc))
                else:  # the step's own bookkeeping failed: a bug, so poison
                    log.exception("worker.complete_failed", task_id=task.id, kind=task.kind)
                    queue.bury(session, task, error_class=error_class, error=describe(exc))
                self._attempt(session, run, error_class, exc)

    def _apply(self, session: Session, run: _Run) -> None:
        task, error = run.task, run.error
        bind = structlog.contextvars.bound_contextvars
        reference = order_reference(task.order_id) if task.order_id else None
        with (
            bind(task_id=task.id, kind=task.kind, reference=reference, attempt=task.attempts),
            queue.inheriting(task.priority),  # what it queues next keeps its order's priority
        ):
            if error is None:
                outcome = None
                if run.work is not None:
                    # Every history entry this writes names the task and attempt behind it.
                    with chain.correlated(task=task.id, attempt=task.attempts, step=task.kind):
                        outcome = self._step(task).complete(session, task, run.result)
                owned = (
                    queue.reschedule(session, task, outcome.run_at)
                    if isinstance(outcome, Reschedule)
                    else queue.finish(session, task)
                )
                if not owned:
                    raise _LeaseLost(task)
                self._attempt(session, run, None, None)
                return
            error_class = classify(error)
            if exhausts(error, task.attempts, self.max_attempts):
                error_class = ErrorClass.EXHAUSTED
                message = f"gave up after {task.attempts} attempts: {describe(error)}"
                owned = queue.bury(session, task, error_class=error_class, error=message)
                log.warning("task.dead", error_class=error_class, error=message)
            elif error_class is ErrorClass.TRANSIENT:
                retry_after = error.retry_after if isinstance(error, TransientError) else None
                delay = self.retry.delay(task.attempts, retry_after)
                owned = queue.retry(
                    session,
                    task,
                    delay=delay,
                    error=describe(error),
                    uncertain=getattr(error, "may_have_happened", True),
                    spent=not _found_down(error),
                )
                log.info("task.retry", delay=round(delay, 3), error=describe(error))
            else:
                owned = queue.bury(session, task, error_class=error_class, error=describe(error))
                log.warning("task.dead", error_class=error_class, error=describe(error))
            if not owned:
                raise _LeaseLost(task)
            self._attempt(session, run, error_class, error)

    def _attempt(
        self, session: Session, run: _Run, error_class: ErrorClass | None, error: Any
    ) -> None:
        at = now()
        started, finished = run.started_at or at, run.finished_at or at
        STEP_SECONDS.labels(run.task.kind, error_class or "ok").observe(
            (finished - started).total_seconds()
        )
        if error_class is None and getattr(self.steps.get(run.task.kind), "quiet", False):
            return
        queue.record_attempt(
            session,
            run.task,
            worker=self.name,
            started_at=started,
            finished_at=finished,
            outcome=error_class or "ok",
            http_status=error.http_status if isinstance(error, StepError) else None,
            error=describe(error) if error is not None else None,
        )


def _answered(error: BaseException | None) -> bool:
    """The dependency is up if it answered: success, a definite (permanent) refusal, or an
    ambiguous 500/502/504 (it processed the request, perhaps fully). A 503 or a request that
    never got an answer says it is down; a 429 that it is busy (handled apart)."""
    if error is None or classify(error) is ErrorClass.PERMANENT:
        return True
    status = error.http_status if isinstance(error, TransientError) else None
    return status is not None and status not in NOT_PROCESSED_STATUSES


def _found_down(error: BaseException) -> bool:
    """The call found its dependency down (503, no connection, no answer): not this task's
    fault, so it spends none of the task's attempts."""
    if _answered(error) or not isinstance(error, TransientError):
        return False
    return error.http_status != 429


class _LeaseLost(Exception):
    def __init__(self, task: ClaimedTask) -> None:
        super().__init__(f"lease of task {task.id} was lost")
