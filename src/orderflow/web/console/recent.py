"""Results recent enough to show again: the home page's heaviest counts (a GROUP BY over every
order) are computed at most once per few seconds per process, however many people watch it
and however often their pages update themselves."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from starlette.datastructures import State

T = TypeVar("T")


class Recent:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._values: dict[Hashable, tuple[float, Any]] = {}

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value computed for `key` less than `seconds` ago, else a freshly computed one."""
        if self.seconds <= 0:
            return compute()
        with self._lock:
            found = self._values.get(key)
        if found is not None and time.monotonic() - found[0] < self.seconds:
            value: T = found[1]
            return value
        value = compute()
        with self._lock:
            self._values[key] = (time.monotonic(), value)
        return value


def recent_for(state: State, seconds: float) -> Recent:
    """The app's own cache (one per app: tests run several apps in one process)."""
    found: Recent | None = getattr(state, "console_recent", None)
    if found is None:
        found = state.console_recent = Recent(seconds)
    return found
