"""The task table (durable work) and the record of every attempt at it."""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, SmallInteger, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from orderflow.clock import now
from orderflow.db import Base, BigId, UTCDateTime


class TaskStatus(StrEnum):
    READY = "ready"  # waiting for run_at
    RUNNING = "running"  # claimed; the lease says until when
    DONE = "done"
    DEAD = "dead"  # a dead letter: needs a person; kept with its evidence
    DISCARDED = "discarded"  # a dead letter a person gave up on (with a reason); kept


class Priority(IntEnum):
    """Whose work comes first within a lane: orders placed one by one (an admin on the phone
    with the customer) before orders that came in bulk (a batch, the intake queue)."""

    INTERACTIVE = 0
    BULK = 1


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_claim", "status", "priority", "run_at"),
        Index("ix_tasks_order_id", "order_id"),
        # Dead letters by cause: the inbox's GROUP BY and a group's pages, from the index alone.
        Index(
            "ix_tasks_dead_cause",
            "cause",
            "id",
            postgresql_include=["last_failed_at", "kind", "error_class"],
            postgresql_where=text("status = 'dead'"),
            sqlite_where=text("status = 'dead'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # Unique per order and step (e.g. "ORD-000123:charge"): the same work is never queued twice.
    key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.READY)
    run_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    # Claimed before higher numbers (see `Priority`); an order's tasks inherit its intake's.
    priority: Mapped[int] = mapped_column(
        SmallInteger, default=Priority.INTERACTIVE, server_default="0"
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error_class: Mapped[str | None] = mapped_column(String(16))  # transient | permanent | poison
    last_error: Mapped[str | None] = mapped_column(Text)
    # A dead letter's cause (`deadletters.causes.fingerprint`), set when it dies: for grouping.
    cause: Mapped[str | None] = mapped_column(String(500))
    first_failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TaskAttempt(Base):
    """Evidence: one row per attempt, whatever came of it."""

    __tablename__ = "task_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(16))  # ok | transient | permanent | poison
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
