"""Automatic redrive: only healable dead letters, only once their dependency is healthy,
a bounded number of times, and named in the order's history."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from orderflow.deadletters.auto import auto_redrive
from orderflow.dependencies.models import Dependency
from orderflow.tasks.models import Task
from tests.support.stack import Stack


def _bury(stack: Stack, order_id: int, error_class: str) -> None:
    with stack.db.transaction() as session:
        session.execute(
            update(Task)
            .where(Task.order_id == order_id, Task.kind == "charge")
            .values(status="dead", error_class=error_class, last_error="HTTP 500: boom")
        )


def _status(stack: Stack, order_id: int) -> str:
    with stack.db.read() as session:
        return str(
            session.scalar(
                select(Task.status).where(Task.order_id == order_id, Task.kind == "charge")
            )
        )


def test_exhausted_work_is_redriven_when_healthy_poison_never(stack: Stack) -> None:
    """Exhausted charges go round again (max once here); poison stays; an open breaker waits."""
    stack.product("WIDGET", stock=10)
    healable = stack.place(stack.customer(), [("WIDGET", 1)])["id"]
    poison = stack.place(stack.customer(), [("WIDGET", 1)])["id"]
    _bury(stack, healable, "exhausted")
    _bury(stack, poison, "poison")

    with stack.db.transaction() as session:
        session.execute(update(Dependency).where(Dependency.name == "paydesk").values(state="open"))
        assert auto_redrive(session, per_run=10, max_times=1, healthy_for=timedelta(0)) == 0
        session.execute(
            update(Dependency).where(Dependency.name == "paydesk").values(state="closed")
        )
        assert auto_redrive(session, per_run=10, max_times=1, healthy_for=timedelta(0)) == 1
    assert _status(stack, healable) == "ready"
    assert _status(stack, poison) == "dead"
    history = stack.order(healable)["history"]
    assert history[-1]["action"] == "work.redriven" and history[-1]["actor"] == "auto-redrive"

    _bury(stack, healable, "exhausted")  # it failed again: but only one automatic try allowed
    with stack.db.transaction() as session:
        assert auto_redrive(session, per_run=10, max_times=1, healthy_for=timedelta(0)) == 0
