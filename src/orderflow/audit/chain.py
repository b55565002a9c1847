"""Append to an order's hash chain, and verify it.

Each entry's hash is SHA-256 over its canonical JSON (sorted keys, no spaces) including the
previous entry's hash (the hashing and checking live in `verify_bundle`, the standalone
verifier, so orderflow and an offline checker agree by construction). The order row holds the
chain head (seq, hash) and is locked while an entry is appended, so appends to one order are
serialized and the chain never forks. Entries are written in the caller's transaction: the
history commits with the change it records, or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session, lazyload

from orderflow import deferred
from orderflow.audit import verify_bundle
from orderflow.audit.models import AuditArchived, AuditEntry
from orderflow.audit.verify_bundle import GENESIS as GENESIS
from orderflow.audit.verify_bundle import Problem
from orderflow.clock import now
from orderflow.orders.models import Order

_correlation: ContextVar[dict[str, Any] | None] = ContextVar("audit_correlation", default=None)


@contextmanager
def correlated(**ids: Any) -> Iterator[None]:
    """Every entry appended inside this block carries these ids under `details.correlation`.

    The worker wraps each step's `complete` in it (task id, attempt, step), so that each entry
    says which piece of work, on which attempt, wrote it: `with chain.correlated(task=t.id,
    attempt=t.attempts, step=t.kind): step.complete(...)`. Blocks nest; inner ids win.
    """
    outer = _correlation.get() or {}
    token = _correlation.set({**outer, **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _correlation.reset(token)


def entry_hash(
    *,
    order_id: int,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    from_status: str | None,
    to_status: str | None,
    details: dict[str, Any],
    prev_hash: str,
) -> str:
    return verify_bundle.entry_hash(
        {
            "order_id": order_id,
            "seq": seq,
            "at": iso(at),
            "actor": actor,
            "action": action,
            "from": from_status,
            "to": to_status,
            "details": details,
            "prev": prev_hash,
        }
    )


def iso(at: datetime) -> str:
    """The timestamp as hashed: ISO 8601, microseconds, UTC offset."""
    return at.isoformat(timespec="microseconds")


def as_dict(e: AuditEntry) -> dict[str, Any]:
    """An entry in the form the standalone verifier checks (and bundles carry)."""
    return {
        "order_id": e.order_id,
        "seq": e.seq,
        "at": iso(e.at),
        "actor": e.actor,
        "action": e.action,
        "from": e.from_status,
        "to": e.to_status,
        "details": e.details,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    }


@dataclass(frozen=True)
class ChainHead:
    status: str
    seq: int
    hash: str


def lock_head(session: Session, order_id: int) -> ChainHead:
    """Lock the order row (on PostgreSQL; SQLite's write lock covers it) and read its head."""
    batch = deferred.current()
    if batch is not None and order_id in batch.heads:
        held = batch.heads[order_id]  # locked by this transaction: memory is the truth
        return ChainHead(status=held.status, seq=held.seq, hash=held.hash)
    row = session.execute(
        select(Order.status, Order.audit_seq, Order.audit_head)
        .where(Order.id == order_id)
        .with_for_update()
    ).one()
    head = ChainHead(status=row.status, seq=row.audit_seq, hash=row.audit_head or GENESIS)
    if batch is not None:
        batch.heads[order_id] = deferred.Head(head.seq, head.status, head.seq, head.hash)
    return head


def lock_heads(session: Session, order_ids: list[int], *, whole_rows: bool = False) -> None:
    """Lock many order rows in one statement, in id order (one global lock order for all
    writers); in a deferred batch, keep their heads. Ids of no order are ignored.
    `whole_rows`: load them as `Order` objects too (for a batch whose steps read them)."""
    batch = deferred.current()
    wanted = sorted(set(order_ids) - (batch.heads.keys() if batch else set()))
    if not wanted:
        return
    rows: Sequence[Any]
    if whole_rows:
        # So that later `session.get(Order, id)` in this transaction costs nothing; status
        # and head are read from the batch, which moves them (not these objects).
        rows = session.scalars(
            select(Order)
            .where(Order.id.in_(wanted))
            .order_by(Order.id)
            .with_for_update()
            .options(lazyload(Order.lines))
            .execution_options(populate_existing=True)
        ).all()
    else:
        rows = session.execute(
            select(Order.id, Order.status, Order.audit_seq, Order.audit_head)
            .where(Order.id.in_(wanted))
            .order_by(Order.id)
            .with_for_update()
        ).all()
    if batch is not None:
        if whole_rows:
            batch.loaded.extend(rows)
        for row in rows:
            batch.heads[row.id] = deferred.Head(
                row.audit_seq, row.status, row.audit_seq, row.audit_head or GENESIS
            )


def flush_heads(session: Session, batch: deferred.Deferred) -> None:
    """Move every order row the batch moved, in one statement, guarded by the locked seq."""
    moved = [(order_id, h) for order_id, h in sorted(batch.heads.items()) if h.updated_at]
    if not moved:
        return
    table = Order.__table__
    assert isinstance(table, Table)
    result = session.connection().execute(
        update(table)
        .where(table.c.id == bindparam("b_id"), table.c.audit_seq == bindparam("b_locked"))
        .values(
            status=bindparam("b_status"),
            audit_seq=bindparam("b_seq"),
            audit_head=bindparam("b_hash"),
            updated_at=bindparam("b_at"),
        ),
        [
            {
                "b_id": order_id,
                "b_locked": h.locked_seq,
                "b_status": h.status,
                "b_seq": h.seq,
                "b_hash": h.hash,
                "b_at": h.updated_at,
            }
            for order_id, h in moved
        ],
    )
    if result.rowcount not in (len(moved), -1):
        raise RuntimeError("an order changed under a lock held by this batch")
    for _, h in moved:
        h.locked_seq, h.updated_at = h.seq, None


def append(
    session: Session,
    order_id: int,
    head: ChainHead,
    *,
    actor: str,
    action: str,
    details: dict[str, Any] | None = None,
    to_status: str | None = None,
) -> ChainHead:
    """Write one entry after `head` and move the order's head (and status, if given) to it."""
    at = now()
    seq = head.seq + 1
    # Hash exactly what the JSON column will give back (string keys, lists, no tuples).
    details = json.loads(json.dumps(details or {}))
    correlation = _correlation.get()
    if correlation:
        details = {"correlation": correlation, **details}
    fields: dict[str, Any] = {
        "order_id": order_id,
        "seq": seq,
        "at": at,
        "actor": actor,
        "action": action,
        "from_status": head.status if to_status else None,
        "to_status": to_status,
        "details": details,
    }
    digest = entry_hash(**fields, prev_hash=head.hash)
    deferred.add(session, AuditEntry, {**fields, "prev_hash": head.hash, "hash": digest})
    batch = deferred.current()
    held = batch.heads.get(order_id) if batch is not None else None
    if held is not None:  # a row this batch locked: moved once, when the batch flushes
        if (held.seq, held.status) != (head.seq, head.status):
            raise RuntimeError(f"order {order_id}: append after a stale head (seq {head.seq})")
        held.status, held.seq, held.hash = to_status or head.status, seq, digest
        held.updated_at = at
        return ChainHead(status=held.status, seq=seq, hash=digest)
    values: dict[str, Any] = {"audit_seq": seq, "audit_head": digest, "updated_at": at}
    if to_status:
        values["status"] = to_status
    moved = session.execute(
        update(Order)
        .where(Order.id == order_id, Order.audit_seq == head.seq, Order.status == head.status)
        .values(**values)
    ).rowcount  # type: ignore[attr-defined]
    if moved != 1:
        raise RuntimeError(f"order {order_id} changed under a held lock (audit seq {head.seq})")
    return ChainHead(status=to_status or head.status, seq=seq, hash=digest)


def genesis(
    order_id: int, at: datetime, *, actor: str, action: str, details: dict[str, Any]
) -> dict[str, Any]:
    """The first entry of a new order's chain, as a row for a set-based INSERT.

    What `append` writes after the empty head (seq 1, after GENESIS, no status move), for a
    caller that writes many new orders at once and sets each order's head (audit_seq 1,
    audit_head = the row's `hash`) in the order's own INSERT instead of an UPDATE.
    """
    details = json.loads(json.dumps(details))
    correlation = _correlation.get()
    if correlation:
        details = {"correlation": correlation, **details}
    fields: dict[str, Any] = {
        "order_id": order_id,
        "seq": 1,
        "at": at,
        "actor": actor,
        "action": action,
        "from_status": None,
        "to_status": None,
        "details": details,
    }
    return {**fields, "prev_hash": GENESIS, "hash": entry_hash(**fields, prev_hash=GENESIS)}


def record(
    session: Session,
    order_id: int,
    *,
    actor: str,
    action: str,
    details: dict[str, Any] | None = None,
) -> None:
    """An entry that changes no status (an e-mail sent, a webhook observed…)."""
    append(
        session, order_id, lock_head(session, order_id), actor=actor, action=action, details=details
    )


@dataclass(frozen=True)
class Verdict:
    """The integrity of one order's history: ok, or every problem found, each precisely."""

    ok: bool
    entries: int
    problems: list[str]
    findings: list[Problem] = field(default_factory=list)
    anchor_id: int | None = None  # the latest anchor the chain was checked against

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "problems": [f.as_dict() for f in self.findings],
            "anchor_id": self.anchor_id,
        }


@dataclass(frozen=True)
class Start:
    """Where the hot chain starts: genesis, or the last entry moved to an archive."""

    seq: int
    hash: str
    archive_id: int | None = None


def chain_start(session: Session, order_id: int) -> Start:
    row = session.execute(
        select(AuditArchived.through_seq, AuditArchived.through_hash, AuditArchived.archive_id)
        .where(AuditArchived.order_id == order_id)
        .order_by(AuditArchived.through_seq.desc())
        .limit(1)
    ).first()
    return Start(0, GENESIS) if row is None else Start(row[0], row[1], row[2])


def entries_of(session: Session, order_id: int) -> list[AuditEntry]:
    """The order's hot entries in chain order (one index range scan on (order_id, seq))."""
    return list(
        session.scalars(
            select(AuditEntry).where(AuditEntry.order_id == order_id).order_by(AuditEntry.seq)
        )
    )


def verify_order(session: Session, order_id: int, public_key: bytes | None = None) -> Verdict:
    """Check the order's chain, its head on the order row, and its latest anchor (with the
    anchor public key: its latest validly signed anchor; later forged ones are problems)."""
    from orderflow.audit import anchors  # anchors builds on this module

    start = chain_start(session, order_id)
    entries = [as_dict(e) for e in entries_of(session, order_id)]
    findings = verify_bundle.check_chain(entries, start_seq=start.seq, start_hash=start.hash)
    last_seq = int(entries[-1]["seq"]) if entries else start.seq
    last_hash = entries[-1]["hash"] if entries else start.hash
    head = session.execute(
        select(Order.audit_seq, Order.audit_head).where(Order.id == order_id)
    ).one_or_none()
    if head is not None:
        findings += _check_head(head.audit_seq, head.audit_head or GENESIS, last_seq, last_hash)
    proof, passed_over = anchors.trusted_anchored_head(session, order_id, public_key)
    findings += passed_over
    if proof is not None and int(proof["leaf"]["seq"]) > start.seq:
        findings += verify_bundle.check_anchored(entries, proof)
    return Verdict(
        ok=not findings,
        entries=len(entries),
        problems=[f.message for f in findings],
        findings=findings,
        anchor_id=None if proof is None else int(proof["anchor"]["id"]),
    )


def _check_head(head_seq: int, head_hash: str, last_seq: int, last_hash: str) -> list[Problem]:
    if head_seq < last_seq:
        extra = f"entry {last_seq} is" if last_seq == head_seq + 1 else "entries are"
        return [
            Problem(
                "inserted",
                head_seq + 1,
                f"the order's head is entry {head_seq}, but the table goes on to entry "
                f"{last_seq}: {extra} beyond the head (inserted after the fact)",
            )
        ]
    if head_seq > last_seq:
        return [
            Problem(
                "truncated",
                last_seq + 1,
                f"the order's head is entry {head_seq}, but the chain ends at entry {last_seq}: "
                "its latest entries were removed (truncated tail)",
            )
        ]
    if head_seq and head_hash != last_hash:
        return [
            Problem(
                "head",
                head_seq,
                f"the order's head hash does not match entry {head_seq}: one of them was altered",
            )
        ]
    return []
