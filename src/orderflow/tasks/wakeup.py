"""An idle worker's sleep: until a transaction queues tasks (PostgreSQL), else the idle interval.

Tasks inserted on PostgreSQL notify channel `orderflow_tasks` when their transaction commits
(a trigger, see the migration `tasks queued notify`). A worker listens only while it is idle:
it starts listening when a claim finds nothing, looks once more (a task committed before the
LISTEN sent it nothing), then sleeps until a notification or the idle interval, whichever comes
first; it stops listening as soon as it has work again, so no notifications pile up while it is
busy. The idle interval stays the backstop: retries and redrives that come due notify nobody,
and a lost listening connection only means polling until it is back.
"""

from __future__ import annotations

import threading
import time
from contextlib import suppress
from typing import Any

import structlog
from sqlalchemy import Connection

from orderflow.db import Database

log = structlog.get_logger("orderflow.worker")

CHANNEL = "orderflow_tasks"
RECONNECT_SECONDS = 5.0  # after a failed LISTEN, poll this long before trying again


class Wakeup:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._notifies = not db.is_sqlite
        self._connection: Connection | None = None
        self._listening = False
        self._retry_at = 0.0

    def listen(self) -> bool:
        """Start listening if not yet; True if it just started (then look for work once more
        before sleeping). False on SQLite, or while the database cannot be listened to."""
        if not self._notifies or self._listening or time.monotonic() < self._retry_at:
            return False
        try:
            if self._connection is None:
                self._connection = self._db.engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT"
                )
            self._connection.exec_driver_sql(f"LISTEN {CHANNEL}")
        except Exception as exc:
            self._lost(exc)
            return False
        self._listening = True
        return True

    def busy(self) -> None:
        """There is work again: stop listening (one round trip, only when it was listening)."""
        if not self._listening or self._connection is None:
            return
        self._listening = False
        try:
            self._connection.exec_driver_sql(f"UNLISTEN {CHANNEL}")
        except Exception as exc:
            self._lost(exc)

    def wait(self, seconds: float, stop: threading.Event) -> None:
        """Sleep until a notification, `stop`, or `seconds` have passed."""
        driver = self._driver() if self._listening else None
        if driver is None:
            stop.wait(seconds)
            return
        deadline = time.monotonic() + seconds
        try:
            while not stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                # In slices, so that `stop` is seen within a second even with a long interval.
                woken = any(
                    True for _ in driver.notifies(timeout=min(remaining, 1.0), stop_after=1)
                )
                if woken:
                    for _ in driver.notifies(timeout=0):  # those that came with it: one wake-up
                        pass
                    return
        except Exception as exc:
            self._lost(exc)
            stop.wait(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        if self._connection is not None:
            with suppress(Exception):
                self._connection.close()
        self._connection, self._listening = None, False

    def _driver(self) -> Any:
        if self._connection is None:
            return None
        return self._connection.connection.driver_connection

    def _lost(self, exc: Exception) -> None:
        log.warning("worker.listen_failed", error=str(exc), retry_in=RECONNECT_SECONDS)
        self.close()
        self._retry_at = time.monotonic() + RECONNECT_SECONDS
