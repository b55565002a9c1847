"""The breaker and pacing rules as pure data and arithmetic (no I/O)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

BURST_SECONDS = 1.0  # requests may be scheduled this far ahead (the carriers' bucket size)

LABELS = {
    "paydesk": "Paydesk",
    "bobs_post": "Bob's Post",
    "smtp": "the mail server",
    "slack": "Slack",
}


@dataclass(frozen=True)
class DependencyPolicy:
    name: str
    failure_threshold: int  # consecutive transient failures that open the breaker
    probe_seconds: float  # while open, one real request this often tests the water
    rate_per_second: float | None  # shared by all workers; None = unpaced

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name)


MIN_RATE_FACTOR = 1 / 64


def allowance(
    policy: DependencyPolicy, paced_until: datetime | None, now: datetime, factor: float = 1.0
) -> int:
    """How many requests may start now without exceeding the rate (one second of burst)."""
    if policy.rate_per_second is None:
        return 1_000_000
    interval = 1.0 / (policy.rate_per_second * factor)
    due = max(paced_until or now, now)
    window_end = now + timedelta(seconds=BURST_SECONDS)
    return max(0, math.floor((window_end - due).total_seconds() / interval + 1e-9))


def paced_after(
    policy: DependencyPolicy,
    paced_until: datetime | None,
    now: datetime,
    requests: int,
    factor: float = 1.0,
) -> datetime | None:
    if policy.rate_per_second is None:
        return paced_until
    due = max(paced_until or now, now)
    return due + timedelta(seconds=requests / (policy.rate_per_second * factor))


def slowed(factor: float, share: float = 1.0) -> float:
    """The pace after 429s for `share` of a batch's calls: down in proportion, at most halved
    (one 429 among forty calls is a nudge, a batch refused whole is a wall)."""
    return max(MIN_RATE_FACTOR, factor * max(0.5, 1.0 - share))


def recovered(factor: float, changed_at: datetime | None, now: datetime) -> float:
    """Additive increase: a tenth of the configured rate back per second since the last change."""
    if factor >= 1.0 or changed_at is None:
        return 1.0
    seconds = (now - changed_at).total_seconds()
    return factor if seconds < 1.0 else min(1.0, factor + 0.1 * int(seconds))


def blocked_until(now: datetime, retry_after: float) -> datetime:
    """The pacing schedule after a 429: nothing may start before Retry-After has passed."""
    return now + timedelta(seconds=retry_after + BURST_SECONDS)
