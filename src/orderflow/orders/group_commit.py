"""Group commit: placements that arrive together share one transaction and one commit.

Requests queue up while a group is being written; the next group takes all of them (up to
`max_group`), so a quiet service answers each order alone, at once, and a busy one writes
dozens per transaction: the database round trips, the stock-row locks and the commit's flush
to disk are paid per group, not per order. Each order stays all or nothing (see
`placement.place_orders`). If a group fails for a reason that is not about the database being
unavailable, its orders are placed again one by one, each in its own transaction, so that a
poisoned order can only spoil itself.
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import structlog
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from orderflow.db import Database
from orderflow.errors import Throttled
from orderflow.orders.placement import Outcome, PlacementRequest, place_orders

log = structlog.get_logger("orderflow.placement")

# The database is busy or away: every order of the group gets the same honest answer (503).
UNAVAILABLE = (PoolTimeout, OperationalError)
RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected


class GroupCommit:
    def __init__(
        self,
        db: Database,
        *,
        max_group: int = 200,
        in_flight: int = 1,
        queue_limit: int = 5000,
    ) -> None:
        self._db = db
        self._max_group = max_group
        self._in_flight = in_flight
        self._queue_limit = queue_limit
        # Two groups in flight: one is written while the next one's reads are sent.
        self._executor = ThreadPoolExecutor(in_flight, thread_name_prefix="placement")
        self._pending: deque[tuple[PlacementRequest, asyncio.Future[Outcome]]] = deque()
        self._drainers: set[asyncio.Task[None]] = set()

    async def place(self, request: PlacementRequest) -> Outcome:
        """Place one order in the next group; 429 (Throttled) when too many are waiting."""
        if len(self._pending) >= self._queue_limit:
            raise Throttled(
                f"{len(self._pending)} orders are waiting to be placed; try again shortly"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._pending.append((request, future))
        if len(self._drainers) < self._in_flight:
            task = loop.create_task(self._drain())
            self._drainers.add(task)
            task.add_done_callback(self._drainers.discard)
        return await future

    async def place_many(self, requests: list[PlacementRequest]) -> list[Outcome | Exception]:
        """Place these orders as one group of their own (a batch request)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.run_group, requests)

    async def _drain(self) -> None:
        try:
            await self._drain_pending()
        finally:
            # Leave the set in the same step in which the queue was seen empty: a `place` that
            # queues right after must see no drainer and start one. (The task's done callback
            # runs a step later; relying on it alone left such a request waiting forever.)
            task = asyncio.current_task()
            if task is not None:
                self._drainers.discard(task)

    async def _drain_pending(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            size = min(len(self._pending), self._max_group)
            group = [self._pending.popleft() for _ in range(size)]
            try:
                outcomes = await loop.run_in_executor(
                    self._executor, self.run_group, [r for r, _ in group]
                )
            except Exception as exc:
                outcomes = [exc] * len(group)
            for (_, future), outcome in zip(group, outcomes, strict=True):
                if future.done():  # the client went away; its order stands (it has a key)
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    def run_group(self, requests: list[PlacementRequest]) -> list[Outcome | Exception]:
        """One transaction for the group (blocking: runs in the executor's threads)."""
        for attempt in range(3):
            try:
                with self._db.transaction() as session:
                    return list(place_orders(session, requests, lock_first=attempt > 0))
            except IntegrityError:
                # A concurrent transaction took one of these Idempotency-Keys (the next attempt
                # finds the order and answers it as a replay) or the stock this group counted
                # on (the next attempt locks stock as it reads it).
                continue
            except OperationalError as exc:
                if getattr(exc.orig, "sqlstate", None) not in RETRYABLE_SQLSTATES:
                    raise
            except UNAVAILABLE:
                raise
            except Exception:
                if len(requests) == 1:
                    raise
                log.exception("placement.group_failed", orders=len(requests))
                break
        if len(requests) == 1:
            raise RuntimeError("placement kept conflicting on its Idempotency-Key")
        results: list[Outcome | Exception] = []
        for request in requests:
            try:
                results.extend(self.run_group([request]))
            except UNAVAILABLE:
                raise
            except Exception as exc:
                results.append(exc)
        return results

    def close(self) -> None:
        self._executor.shutdown(wait=True)
