"""Append to an order's hash chain, and verify it.

Each entry's hash is SHA-256 over its canonical JSON (sorted keys, no spaces) including the
previous entry's hash. The order row holds the chain head (seq, hash) and is locked while an
entry is appended, so appends to one order are serialized and the chain never forks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from orderflow.audit.models import AuditEntry
from orderflow.clock import now
from orderflow.orders.models import Order

GENESIS = "0" * 64


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
    content = {
        "order_id": order_id,
        "seq": seq,
        "at": at.isoformat(timespec="microseconds"),
        "actor": actor,
        "action": action,
        "from": from_status,
        "to": to_status,
        "details": details,
        "prev": prev_hash,
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class ChainHead:
    status: str
    seq: int
    hash: str


def lock_head(session: Session, order_id: int) -> ChainHead:
    """Lock the order row (on PostgreSQL; SQLite's write lock covers it) and read its head."""
    row = session.execute(
        select(Order.status, Order.audit_seq, Order.audit_head)
        .where(Order.id == order_id)
        .with_for_update()
    ).one()
    return ChainHead(status=row.status, seq=row.audit_seq, hash=row.audit_head or GENESIS)


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
    fields: dict[str, Any] = {
        "order_id": order_id,
        "seq": seq,
        "at": at,
        "actor": actor,
        "action": action,
        "from_status": head.status if to_status else None,
        "to_status": to_status,
        "details": details or {},
    }
    digest = entry_hash(**fields, prev_hash=head.hash)
    session.add(AuditEntry(**fields, prev_hash=head.hash, hash=digest))
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
    ok: bool
    entries: int
    problems: list[str]


def verify_order(session: Session, order_id: int) -> Verdict:
    entries = session.scalars(
        select(AuditEntry).where(AuditEntry.order_id == order_id).order_by(AuditEntry.seq)
    ).all()
    problems: list[str] = []
    prev = GENESIS
    for expected_seq, e in enumerate(entries, start=1):
        if e.seq != expected_seq:
            problems.append(f"entry seq {e.seq} found where {expected_seq} was expected")
        if e.prev_hash != prev:
            problems.append(f"entry {e.seq} does not follow the entry before it")
        recomputed = entry_hash(
            order_id=e.order_id,
            seq=e.seq,
            at=e.at,
            actor=e.actor,
            action=e.action,
            from_status=e.from_status,
            to_status=e.to_status,
            details=e.details,
            prev_hash=e.prev_hash,
        )
        if recomputed != e.hash:
            problems.append(f"entry {e.seq} ({e.action}) was changed after it was written")
        prev = e.hash
    head = session.execute(
        select(Order.audit_seq, Order.audit_head).where(Order.id == order_id)
    ).one_or_none()
    if head is not None and (
        head.audit_seq != len(entries) or (entries and head.audit_head != prev)
    ):
        problems.append(
            f"the order's chain head says {head.audit_seq} entries, the table has {len(entries)}"
        )
    return Verdict(ok=not problems, entries=len(entries), problems=problems)
