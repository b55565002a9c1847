"""Retry policy as data: capped exponential backoff with jitter, honouring Retry-After."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float
    max_seconds: float
    jitter: float = 0.5  # the wait is drawn from [(1 - jitter) * backoff, backoff]

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before attempt `attempt + 1`, after `attempt` attempts failed."""
        exponent = min(max(attempt - 1, 0), 62)  # no float overflow for very long outages
        backoff = min(self.max_seconds, self.base_seconds * 2.0**exponent)
        wait = backoff * (1.0 - self.jitter * rand())
        if retry_after is not None:
            # Never sooner than the server asked; never longer than our own cap.
            wait = max(wait, min(retry_after, self.max_seconds))
        return wait
