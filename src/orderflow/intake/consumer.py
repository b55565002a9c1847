"""`orderflow intake`: consume order messages from RabbitMQ, commit them in groups, ack after.

RabbitMQ pushes up to `prefetch` unacknowledged messages; they are cut into groups (up to
`group_size` messages, or whatever arrived within `group_seconds` of the first; fewer when
one transaction of that many would take longer than `transaction_seconds`), each group is
committed in one transaction (on a thread, so the connection's heartbeats go on), and only then
acknowledged with one `basic.ack(multiple=True)` up to its last delivery tag. A process killed
at any moment leaves its unacked messages to RabbitMQ, which delivers them again; the orders'
idempotency keys and the dead letters' keys make that second delivery create nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from contextlib import suppress
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError
from yarl import URL

from orderflow.backpressure import SHEDDING, WARNING, Gauge
from orderflow.db import Database
from orderflow.intake.group import DATABASE_DOWN, GroupCommit, Inbound, Outcome

log = structlog.get_logger("orderflow.intake")

BROKER_LOST = (AMQPError, ChannelInvalidStateError, OSError, asyncio.TimeoutError)
POLL_SECONDS = 0.2  # how often a waiting consumer looks at the stop flag
MAX_BACKOFF_SECONDS = 10.0
FIRST_GROUP = 50  # before the cost of a message is known


class IntakeConsumer:
    def __init__(
        self,
        db: Database,
        url: str,
        queue: str,
        *,
        prefetch: int = 1000,
        group_size: int = 500,
        group_seconds: float = 0.1,
        transaction_seconds: float = 0.5,
        name: str | None = None,
        pressure: Gauge | None = None,
    ) -> None:
        self.url = url
        self.queue = queue
        self.prefetch = prefetch
        self.full_prefetch = prefetch
        self.pressure = pressure  # behind on payments: take fewer messages at a time
        self.group_size = group_size
        self.group_seconds = group_seconds
        self.transaction_seconds = transaction_seconds
        self._seconds_per_message: float | None = None  # measured, smoothed
        self.name = name or f"intake:{socket.gethostname()}:{os.getpid()}"
        self.commit = GroupCommit(db, queue, actor=f"intake:{queue}"[:100], worker=self.name)
        self.totals: Counter[Outcome] = Counter()
        self.groups = 0
        self.connections = 0  # how many times it (re)connected
        self.peak_unacked = 0  # the most deliveries seen unacknowledged at once
        self._channel: AbstractChannel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- control ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set; the group in hand is committed and acked first."""
        asyncio.run(self._run(stop))

    def throttle(self, prefetch: int) -> Future[Any] | None:
        """Change the prefetch window now (from another thread): fewer messages in flight,
        smaller groups; kept across reconnections. Backpressure's lever. Returns what to wait
        on until RabbitMQ applied it (None when not connected: applied on connecting)."""
        self.prefetch = max(1, prefetch)
        loop, channel = self._loop, self._channel
        if loop is None or channel is None:
            return None
        return asyncio.run_coroutine_threadsafe(
            channel.set_qos(prefetch_count=self.prefetch, global_=True), loop
        )

    def group_limit(self) -> int:
        """Messages in the next group: at most `group_size`, no more than the prefetch window
        (more could never come), and as many as one transaction settles in about
        `transaction_seconds`, so that a group never holds its stock rows (or SQLite's write
        lock) for long while placement is slow."""
        limit = min(self.group_size, self.prefetch)
        if self._seconds_per_message:
            limit = min(limit, int(self.transaction_seconds / self._seconds_per_message))
        else:
            limit = min(limit, FIRST_GROUP)
        return max(1, limit)

    def learn_cost(self, seconds: float, messages: int) -> None:
        """What a group of `messages` took to commit (smoothed into the cost of a message)."""
        per_message = seconds / max(1, messages)
        previous = self._seconds_per_message
        self._seconds_per_message = (
            per_message if previous is None else 0.7 * previous + 0.3 * per_message
        )

    async def _follow_pressure(self) -> None:
        """Backpressure: the full window when normal, a tenth of it on warning, one message
        at a time while shedding; unacknowledged messages wait safely in RabbitMQ."""
        if self.pressure is None:
            return
        state = (await asyncio.to_thread(self.pressure.current)).state
        wanted = {SHEDDING: 1, WARNING: max(1, self.full_prefetch // 10)}.get(
            state, self.full_prefetch
        )
        if wanted != self.prefetch:
            log.warning("intake.throttled", state=state, prefetch=wanted)
            self.prefetch = wanted
            if self._channel is not None:
                await self._channel.set_qos(prefetch_count=wanted, global_=True)

    # --- the loop --------------------------------------------------------------------------
    async def _run(self, stop: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        log.info("intake.started", consumer=self.name, queue=self.queue, prefetch=self.prefetch)
        backoff = 0.5
        while not stop.is_set():
            connections = self.connections
            try:
                await self._consume(stop)
            except BROKER_LOST as exc:
                if self.connections > connections:
                    backoff = 0.5  # it was connected: a new outage, not the same one
                # Unacked messages go back to the queue with the channel; nothing is lost.
                log.warning("intake.broker_lost", error=repr(exc), retry_in=backoff)
                await _sleep(stop, backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        log.info(
            "intake.stopped",
            consumer=self.name,
            groups=self.groups,
            **{str(k): v for k, v in self.totals.items()},
        )

    async def _consume(self, stop: threading.Event) -> None:
        # Named after the consumer, so that operators (and tests) can tell its connection.
        url = URL(self.url).update_query(name=self.name)
        connection = await aio_pika.connect(url, timeout=10)
        self.connections += 1
        async with connection:
            channel = await connection.channel()
            # Per channel ("global"), not per consumer: only then does a later change of the
            # window (throttle) apply to the running consumer.
            await channel.set_qos(prefetch_count=self.prefetch, global_=True)
            queue = await channel.declare_queue(self.queue, durable=True)
            inbox = _Inbox()
            consumer_tag = await queue.consume(inbox.put)
            self._channel = channel
            try:
                while not stop.is_set():
                    group = await self._collect(inbox, stop, channel)
                    if group:
                        await self._settle(group, stop)
            finally:
                self._channel = None
                if not channel.is_closed:
                    with suppress(*BROKER_LOST):
                        await queue.cancel(consumer_tag)

    async def _collect(
        self, inbox: _Inbox, stop: threading.Event, channel: AbstractChannel
    ) -> list[AbstractIncomingMessage]:
        """The next group: what is waiting, topped up until full or `group_seconds` passed."""
        group: list[AbstractIncomingMessage] = []
        limit = self.group_limit()
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        while len(group) < limit and not stop.is_set():
            if channel.is_closed:
                raise ConnectionError("the channel closed")
            if inbox.messages:
                group.append(inbox.messages.popleft())
                deadline = deadline or loop.time() + self.group_seconds
                continue
            wait = POLL_SECONDS if deadline is None else min(deadline - loop.time(), POLL_SECONDS)
            if wait <= 0:
                break
            await inbox.wait(wait)
        self.peak_unacked = max(self.peak_unacked, len(group) + len(inbox.messages))
        return group

    async def _settle(self, group: list[AbstractIncomingMessage], stop: threading.Event) -> None:
        """Commit the group (retrying while the database is down), then ack it in one go."""
        inbound = [Inbound(m.body, m.message_id) for m in group]
        backoff = 0.5
        while True:
            started = time.monotonic()
            try:
                outcomes = await asyncio.to_thread(self.commit, inbound)
                break
            except DATABASE_DOWN as exc:
                log.warning("intake.database_unavailable", error=str(exc.orig), retry_in=backoff)
            except Exception:
                log.exception("intake.group_failed", size=len(group), retry_in=backoff)
            if stop.is_set():
                return  # not acked: RabbitMQ gives these to the next consumer
            await _sleep(stop, backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        # Deliveries are grouped in delivery order on one channel, so this acks exactly them.
        await group[-1].ack(multiple=True)
        self.groups += 1
        self.learn_cost(time.monotonic() - started, len(group))
        self.totals.update(outcomes)
        await self._follow_pressure()
        log.info(
            "intake.group",
            size=len(group),
            ms=round((time.monotonic() - started) * 1000, 1),
            **{str(k): v for k, v in outcomes.items()},
        )


class _Inbox:
    """Deliveries in delivery order. A deque and a wake-up, not an asyncio.Queue: on Python
    3.11 a timed-out `wait_for(queue.get())` can drop an item, which the next multiple-ack
    would then acknowledge unprocessed."""

    def __init__(self) -> None:
        self.messages: deque[AbstractIncomingMessage] = deque()
        self._arrived = asyncio.Event()

    async def put(self, message: AbstractIncomingMessage) -> None:
        self.messages.append(message)
        self._arrived.set()

    async def wait(self, seconds: float) -> None:
        self._arrived.clear()
        if not self.messages:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), seconds)


async def _sleep(stop: threading.Event, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(min(POLL_SECONDS, deadline - time.monotonic()))
