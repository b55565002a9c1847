"""Results recent enough to show again: the home page's heaviest counts (a GROUP BY over every
order) are computed at most once per few seconds per process, however many people watch it
and however often their pages update themselves.

A value older than `seconds` is still shown once more while a background thread computes the
next one (so that no page waits for the big count while people are watching); a value older
than `STALE_AFTER` times `seconds` (nobody looked for a while) is computed before answering.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import structlog
from starlette.datastructures import State

T = TypeVar("T")
STALE_AFTER = 3
log = structlog.get_logger("orderflow.console")


class Recent:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._values: dict[Hashable, tuple[float, Any]] = {}
        self._refreshing: set[Hashable] = set()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value for `key` (see the module's docstring). `compute` opens its own database
        session: it may run in a background thread after the request has ended."""
        if self.seconds <= 0:
            return compute()
        with self._lock:
            found = self._values.get(key)
            age = time.monotonic() - found[0] if found is not None else None
            refresh = (
                age is not None
                and self.seconds <= age < self.seconds * STALE_AFTER
                and key not in self._refreshing
            )
            if refresh:
                self._refreshing.add(key)
        if found is not None and age is not None and age < self.seconds * STALE_AFTER:
            if refresh:
                threading.Thread(
                    target=self._refresh, args=(key, compute), name="console-recent", daemon=True
                ).start()
            value: T = found[1]
            return value
        return self._store(key, compute())

    def _store(self, key: Hashable, value: T) -> T:
        with self._lock:
            self._values[key] = (time.monotonic(), value)
        return value

    def _refresh(self, key: Hashable, compute: Callable[[], Any]) -> None:
        try:
            self._store(key, compute())
        except Exception:
            log.exception("console.recount_failed", key=str(key))
        finally:
            with self._lock:
                self._refreshing.discard(key)


def recent_for(state: State, seconds: float) -> Recent:
    """The app's own cache (one per app: tests run several apps in one process)."""
    with _creating:
        found: Recent | None = getattr(state, "console_recent", None)
        if found is None:
            found = state.console_recent = Recent(seconds)
    return found


_creating = threading.Lock()
