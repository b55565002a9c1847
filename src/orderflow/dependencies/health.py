"""Read and change dependency health inside the caller's transaction.

Closed: tasks flow, paced at the dependency's rate. After `failure_threshold` consecutive
transient failures (timeouts, connection errors, 5xx) the breaker opens: no task of that
dependency is claimed (so none uses up attempts) except one probe every `probe_seconds`,
which is a real task's real request. A success anywhere closes it; the backlog then drains,
oldest first, at the dependency's rate. A 429 is not an outage: it pushes the shared pacing
schedule out by its Retry-After, for every worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from orderflow.clock import now
from orderflow.db import insert_ignore
from orderflow.dependencies.models import Dependency, DependencyChange
from orderflow.dependencies.policy import (
    DependencyPolicy,
    allowance,
    blocked_until,
    paced_after,
    recovered,
    slowed,
)

log = structlog.get_logger("orderflow.dependencies")

CLOSED, OPEN = "closed", "open"


def ensure(session: Session, names: list[str]) -> None:
    for name in names:
        insert_ignore(
            session,
            Dependency,
            {"name": name, "state": CLOSED, "consecutive_failures": 0, "state_since": now()},
            "name",
        )


def lock_all(session: Session, names: list[str]) -> dict[str, Dependency]:
    """Lock these dependencies' rows in name order (callers that touch several rows in one
    transaction must take them in one global order, or two workers can deadlock); the rows."""
    if not names:
        return {}
    rows = session.scalars(
        select(Dependency)
        .where(Dependency.name.in_(names))
        .order_by(Dependency.name)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    return {row.name: row for row in rows}


@dataclass(frozen=True)
class Budget:
    """How many tasks of one dependency a worker may claim now."""

    dependency: str
    limit: int
    probe: bool  # True: the breaker is open and this claim is its probe


def budget(
    session: Session, policy: DependencyPolicy, wanted: int, row: Dependency | None = None
) -> Budget:
    """Lock the dependency's row (serializing claimers) and say how much may be claimed.

    `row`: the row as `lock_all` just locked and read it (saves reading it again)."""
    if row is None:
        row = session.scalar(
            select(Dependency)
            .where(Dependency.name == policy.name)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    at = now()
    if row is None:
        return Budget(policy.name, wanted, probe=False)
    if row.state == OPEN:
        if row.next_probe_at is not None and row.next_probe_at > at:
            return Budget(policy.name, 0, probe=False)
        # Our probe: the next one is due only after this one had its chance.
        row.next_probe_at = at + timedelta(seconds=policy.probe_seconds)
        return Budget(policy.name, min(1, wanted), probe=True)
    room = allowance(policy, row.paced_until, at, row.rate_factor)
    return Budget(policy.name, min(wanted, room), probe=False)


def consume(
    session: Session, policy: DependencyPolicy, requests: int
) -> tuple[datetime, timedelta] | None:
    """Book `requests` on the shared pacing schedule (row already locked by `budget`); returns
    when the first of them may go out and the gap between them (None: not paced)."""
    if requests == 0 or policy.rate_per_second is None:
        return None
    row = session.get(Dependency, policy.name)
    if row is None:
        return None
    at = now()
    first = max(row.paced_until or at, at)
    until = paced_after(policy, row.paced_until, at, requests, row.rate_factor)
    assert until is not None  # paced: a rate is set
    row.paced_until = until
    return first, (until - first) / requests


def record_success(session: Session, name: str, *, throttled: bool = False) -> None:
    at = now()
    row = session.get(Dependency, name, with_for_update=True, populate_existing=True)
    if row is None:
        return
    if not throttled and row.rate_factor < 1.0:
        factor = recovered(row.rate_factor, row.rate_changed_at, at)
        if factor != row.rate_factor:
            row.rate_factor, row.rate_changed_at = factor, at
    if row.state == OPEN:
        log.warning(
            "dependency.recovered",
            dependency=name,
            down_for=str(at - row.state_since).split(".")[0],
        )
        row.state, row.state_since, row.next_probe_at = CLOSED, at, None
        session.add(DependencyChange(name=name, state=CLOSED, at=at))
    row.consecutive_failures = 0
    row.last_success_at = at


def record_failure(session: Session, policy: DependencyPolicy, error: str, calls: int = 1) -> None:
    """`calls` consecutive calls failed (a whole batch's worth counts call by call)."""
    at = now()
    row = session.get(Dependency, policy.name, with_for_update=True, populate_existing=True)
    if row is None:
        return
    row.consecutive_failures += calls
    row.last_error, row.last_failure_at = error[:2000], at
    if row.state == CLOSED and row.consecutive_failures >= policy.failure_threshold:
        log.warning("dependency.down", dependency=policy.name, error=error[:300])
        row.state, row.state_since = OPEN, at
        session.add(DependencyChange(name=policy.name, state=OPEN, at=at, error=error[:2000]))
        row.next_probe_at = at + timedelta(seconds=policy.probe_seconds)


def throttle(
    session: Session, policy: DependencyPolicy, retry_after: float | None, share: float = 1.0
) -> None:
    """429s for `share` of a batch's calls: nobody calls this dependency before Retry-After,
    and then at a slower pace (see `policy.slowed`)."""
    wait = retry_after if retry_after is not None else 1.0
    row = session.get(Dependency, policy.name, with_for_update=True, populate_existing=True)
    if row is not None:
        row.rate_factor, row.rate_changed_at = slowed(row.rate_factor, share), now()
        log.info(
            "dependency.throttled",
            dependency=policy.name,
            retry_after=wait,
            rate=round((policy.rate_per_second or 0) * row.rate_factor, 2),
        )
        until = blocked_until(now(), wait)
        if row.paced_until is None or row.paced_until < until:
            row.paced_until = until


def snapshot(session: Session) -> list[Dependency]:
    return list(session.scalars(select(Dependency).order_by(Dependency.name)))


def states(session: Session) -> dict[str, Dependency]:
    return {d.name: d for d in snapshot(session)}
