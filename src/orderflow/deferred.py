"""Writes a worker's batch defers to its end, so each table gets one statement per batch.

Inside `deferring()`, the hash chain keeps the heads of orders locked up front in memory and
moves each order row once, and the task queue buffers the tasks it queues and finishes; the
worker then writes them all with `chain.flush_heads` and `queue.flush_deferred`. Outside it
(the API, the CLI, the slow path of a batch) every call writes at once. The order row stays
the one lock for everything about an order: heads are only deferred for rows this
transaction holds, so nobody else can read or move them before the batch commits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from orderflow import bulk


@dataclass
class Head:
    """An order's chain head as locked (`locked_seq`) and as moved since (the rest)."""

    locked_seq: int
    status: str
    seq: int
    hash: str
    updated_at: datetime | None = None  # set once the batch moved it


@dataclass
class Deferred:
    heads: dict[int, Head] = field(default_factory=dict)
    new_tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # by task key
    finished: list[int] = field(default_factory=list)  # ids of tasks done
    postponed: dict[str, datetime] = field(default_factory=dict)  # waiting tasks' new due time
    cancelled: set[str] = field(default_factory=set)  # keys of waiting tasks no longer needed
    # Rows loaded for the batch, referenced here because the session holds them only weakly
    # (unreferenced, they would be dropped and read again by the next `session.get`).
    loaded: list[Any] = field(default_factory=list)
    # Work that reads the batch's state once for all its steps, run when it is written.
    before_flush: dict[str, Callable[[], None]] = field(default_factory=dict)
    booked: dict[str, Any] = field(default_factory=dict)  # shipments booked by the batch
    shipments: dict[int, Any] | None = None  # of the locked orders, by order id, once read
    # Of a group of carrier events: the orders locked for it, and which of them had their
    # "shipped" e-mail (read once for all of them when the first event asks).
    email_scope: frozenset[int] = frozenset()
    shipped_emails: set[int] | None = None
    rows: dict[type[Any], list[dict[str, Any]]] = field(default_factory=dict)  # new, by model

    def pop_booked(self) -> dict[str, Any]:
        booked, self.booked = self.booked, {}
        return booked


_current: ContextVar[Deferred | None] = ContextVar("orderflow_deferred", default=None)


def current() -> Deferred | None:
    return _current.get()


def add(session: Session, model: type[Any], values: dict[str, Any]) -> None:
    """A new row that nothing reads back before the commit (history, outbox): added to the
    session at once outside a batch; inside one, written with the batch's others of its
    table in one statement (no ORM object, no id fetched)."""
    batch = current()
    if batch is None:
        session.add(model(**values))
    else:
        batch.rows.setdefault(model, []).append(values)


def flush_rows(session: Session, batch: Deferred) -> None:
    """The batch's new rows, every table at once (one statement on PostgreSQL): Core, not the
    ORM's bulk path, so nothing is fetched back or tracked."""
    bulk.insert_rows(session, [(model.__table__, rows) for model, rows in batch.rows.items()])
    batch.rows.clear()


@contextmanager
def deferring() -> Iterator[Deferred]:
    deferred = Deferred()
    token = _current.set(deferred)
    try:
        yield deferred
    finally:
        _current.reset(token)
