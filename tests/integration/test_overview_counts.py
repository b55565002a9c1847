"""The home page's read model on SQLite and PostgreSQL: time buckets computed in SQL, backlog
samples, dependency up/down spans, work waiting per step."""

from __future__ import annotations

from datetime import timedelta

from orderflow.clock import now
from orderflow.db import Database
from orderflow.dependencies import health
from orderflow.dependencies.policy import DependencyPolicy
from orderflow.observability import overview
from orderflow.observability.buckets import window
from orderflow.tasks import queue


def test_backlog_is_sampled_and_charted_per_step_in_its_minute(db: Database) -> None:
    """Two booking tasks and one charge waiting: one sample holds 2 and 1, in the latest minute
    of the hour; the other minutes have no sample (a gap, not a zero)."""
    with db.transaction() as session:
        queue.enqueue(session, "book", "a:book", run_at=now() - timedelta(seconds=30))
        queue.enqueue(session, "book", "b:book")
        queue.enqueue(session, "charge", "c:charge")
        queue.enqueue(session, "track", "d:track", run_at=now() + timedelta(hours=1))
    with db.transaction() as session:
        overview.sample_backlog(session)
    with db.read() as session:
        series = overview.backlog_series(session, window("hour", now()))
        work = {w["step"]: w for w in overview.work_waiting(session)}
    assert set(series) == {"book", "charge"}
    assert [v for v in series["book"] if v is not None] == [2]
    assert [v for v in series["charge"] if v is not None] == [1]
    assert series["book"][:58] == [None] * 58  # the sample is in one of the last two minutes
    assert set(work) == {"book", "charge"}  # a shipment's next routine poll is no backlog
    assert work["book"]["waiting"] == 2 and work["book"]["due"] == 2
    assert work["book"]["oldest_due_seconds"] >= 29


def test_an_outage_is_a_down_span_between_two_up_spans(db: Database) -> None:
    """Bob's Post down then back: up, down, up over the window; Paydesk up throughout."""
    policy = DependencyPolicy(
        "bobs_post", failure_threshold=1, probe_seconds=60, rate_per_second=None
    )
    with db.transaction() as session:
        health.ensure(session, ["bobs_post", "paydesk"])
    with db.transaction() as session:
        health.record_failure(session, policy, "HTTP 503")
    with db.transaction() as session:
        health.record_success(session, "bobs_post")
    with db.read() as session:
        bands = {b["name"]: b for b in overview.dependency_bands(session, window("day", now()))}
    assert [s["state"] for s in bands["bobs_post"]["spans"]] == ["closed", "open", "closed"]
    assert [s["state"] for s in bands["paydesk"]["spans"]] == ["closed"]
