"""Group commit for requests: what arrives together is written in one transaction.

Requests queue up while a group is being written; the next group takes all of them (up to
`max_group`), so a quiet service answers each request alone, at once, and a busy one writes
dozens per transaction: the database round trips, the row locks and the commit's flush to disk
are paid per group, not per request. Subclasses say how a group is written (`run_group`,
blocking, in the grouper's own thread); each request gets its own result or exception.
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from orderflow.errors import Throttled

# The database is busy or away: every request of a group gets the same honest answer (503).
UNAVAILABLE = (PoolTimeout, OperationalError)

R = TypeVar("R")
Out = TypeVar("Out")


class Grouper(Generic[R, Out]):
    what = "requests"  # for the 429's message

    def __init__(
        self, *, max_group: int = 200, in_flight: int = 1, queue_limit: int = 5000
    ) -> None:
        self._max_group = max_group
        self._in_flight = in_flight
        self._queue_limit = queue_limit
        self._executor = ThreadPoolExecutor(in_flight, thread_name_prefix=type(self).__name__)
        self._pending: deque[tuple[R, asyncio.Future[Out]]] = deque()
        self._drainers: set[asyncio.Task[None]] = set()
        self._batches = asyncio.Lock()  # one batch request at a time (see submit_many)

    def run_group(self, requests: list[R]) -> list[Out | Exception]:
        """Write these requests, one result or exception each, in order (blocking)."""
        raise NotImplementedError

    def one_by_one(self, requests: list[R]) -> list[Out | Exception]:
        """After a group failed for another reason than the database being away: each request
        again in a group of its own, so that a poisoned one spoils only itself."""
        results: list[Out | Exception] = []
        for request in requests:
            try:
                results.extend(self.run_group([request]))
            except UNAVAILABLE:
                raise
            except Exception as exc:
                results.append(exc)
        return results

    async def submit(self, request: R) -> Out:
        """Write one request in the next group; 429 (Throttled) when too many are waiting."""
        if len(self._pending) >= self._queue_limit:
            raise Throttled(
                f"{len(self._pending)} {self.what} are waiting to be written; try again shortly"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Out] = loop.create_future()
        self._pending.append((request, future))
        if len(self._drainers) < self._in_flight:
            task = loop.create_task(self._drain())
            self._drainers.add(task)
            task.add_done_callback(self._drainers.discard)
        return await future

    async def submit_many(
        self, requests: list[R], give_way_seconds: float = 1.0
    ) -> list[Out | Exception]:
        """Write these requests as one group of their own (a batch request).

        Batches go one at a time, each after the single requests already waiting (for at
        most `give_way_seconds`): a burst of batches holds up a request sent on its own for
        one batch at most, not for all of them queued in the writer's thread."""
        loop = asyncio.get_running_loop()
        async with self._batches:
            deadline = loop.time() + give_way_seconds
            while self._pending and loop.time() < deadline:
                await asyncio.sleep(0.005)
            return await loop.run_in_executor(self._executor, self.run_group, requests)

    async def _drain(self) -> None:
        try:
            await self._drain_pending()
        finally:
            # Leave the set in the same step in which the queue was seen empty: a `submit` that
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
                if future.done():  # the client went away; what it asked for stands
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
