"""Anchors: a Merkle root over every order's chain head, chained, and exported outside the DB.

A hash chain alone cannot reveal that its latest entries were removed and the order's head moved
back: what remains is a valid, shorter chain. An anchor fixes every head at one moment: the
Merkle root over the leaves (order_id, seq, head hash), sorted by order id, hashed together with
the previous anchor's hash. Each anchor is stored in `audit_anchors` (with the heads that moved
since the previous anchor in `audit_anchor_heads`) and appended as one JSON line to
`<ORDERFLOW_AUDIT_ANCHOR_DIR>/anchors.jsonl`, outside the database, where rewriting the database
cannot reach it (ship that file on: object storage with retention lock, an e-mail, a ticket…).

Anchoring refuses to move an order's anchored head backwards or sideways: a chain truncated after
an anchor stays detected, whatever is anchored later.

Run `orderflow audit anchor` from cron, or call `anchor_if_due` from a worker loop.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session

from orderflow.audit.chain import iso
from orderflow.audit.models import AuditAnchor, AuditAnchorHead, AuditEntry
from orderflow.audit.verify_bundle import (
    GENESIS,
    Problem,
    anchor_hash,
    merkle_leaf,
    merkle_proof,
    merkle_root,
)
from orderflow.clock import now
from orderflow.db import Database
from orderflow.orders.models import Order

ANCHOR_FILE = "anchors.jsonl"
Heads = dict[int, tuple[int, str]]  # order id -> (seq, hash)


def record(a: AuditAnchor) -> dict[str, Any]:
    """The anchor as hashed, exported and carried in bundles."""
    return {
        "id": a.id,
        "at": iso(a.at),
        "orders": a.orders,
        "root": a.root,
        "prev_hash": a.prev_hash,
        "hash": a.hash,
    }


def latest(session: Session) -> AuditAnchor | None:
    return session.scalar(select(AuditAnchor).order_by(AuditAnchor.id.desc()).limit(1))


def current_heads(session: Session) -> Heads:
    rows = session.execute(
        select(Order.id, Order.audit_seq, Order.audit_head).where(Order.audit_seq > 0)
    )
    return {oid: (seq, head) for oid, seq, head in rows}


def anchored_heads(session: Session, anchor_id: int | None = None) -> Heads:
    """Every order's leaf under anchor `anchor_id` (default: the latest)."""
    query = select(AuditAnchorHead.order_id, AuditAnchorHead.seq, AuditAnchorHead.hash).order_by(
        AuditAnchorHead.order_id, AuditAnchorHead.anchor_id
    )
    if anchor_id is not None:
        query = query.where(AuditAnchorHead.anchor_id <= anchor_id)
    heads: Heads = {}
    for oid, seq, digest in session.execute(query):
        heads[oid] = (seq, digest)  # rows come in anchor order: the last one wins
    return heads


def root_of(heads: Heads) -> str:
    return merkle_root([merkle_leaf(oid, seq, h) for oid, (seq, h) in sorted(heads.items())])


@dataclass
class Anchored:
    anchor: dict[str, Any]
    moved: int  # heads that moved since the previous anchor
    refused: list[Problem] = field(default_factory=list)  # heads that went back: not anchored


def anchor(session: Session) -> Anchored:
    """Anchor every chain head now (in the caller's transaction; export after commit)."""
    previous = latest(session)
    old = anchored_heads(session)
    current = current_heads(session)
    refused: list[tuple[int, Problem]] = []
    moved: Heads = {}
    for oid, (seq, digest) in current.items():
        before = old.get(oid)
        if before == (seq, digest):
            continue
        if before is not None and seq < before[0]:
            message = f"order {oid}: its head went from entry {before[0]} back to entry {seq}"
            refused.append((oid, Problem("truncated", seq, message)))
        elif before is not None and seq == before[0]:
            message = f"order {oid}: entry {seq} is no longer the one anchored"
            refused.append((oid, Problem("anchor", seq, message)))
        else:
            moved[oid] = (seq, digest)
    refused += _rewritten_since_anchored(session, old, moved)
    for oid, _ in refused:
        moved.pop(oid, None)
    heads = {**old, **moved}
    at = now()
    fields: dict[str, Any] = {
        "id": (previous.id if previous else 0) + 1,
        "at": iso(at),
        "orders": len(heads),
        "root": root_of(heads),
        "prev_hash": previous.hash if previous else GENESIS,
    }
    digest = anchor_hash(fields)
    row = AuditAnchor(
        id=fields["id"],
        at=at,
        orders=fields["orders"],
        root=fields["root"],
        prev_hash=fields["prev_hash"],
        hash=digest,
    )
    session.add(row)
    session.flush()
    session.add_all(
        AuditAnchorHead(order_id=oid, anchor_id=row.id, seq=seq, hash=h)
        for oid, (seq, h) in moved.items()
    )
    session.flush()
    return Anchored(
        anchor={**fields, "hash": digest}, moved=len(moved), refused=[p for _, p in refused]
    )


def _rewritten_since_anchored(
    session: Session, old: Heads, moved: Heads
) -> list[tuple[int, Problem]]:
    """A head that moved on must still have its anchored entry in its chain, unchanged."""
    keys = [(oid, old[oid][0]) for oid in moved if oid in old]
    problems: list[tuple[int, Problem]] = []
    for i in range(0, len(keys), 500):
        batch = keys[i : i + 500]
        found = {
            (oid, seq): h
            for oid, seq, h in session.execute(
                select(AuditEntry.order_id, AuditEntry.seq, AuditEntry.hash).where(
                    tuple_(AuditEntry.order_id, AuditEntry.seq).in_(batch)
                )
            )
        }
        for oid, seq in batch:
            if (oid, seq) in found and found[(oid, seq)] != old[oid][1]:
                message = f"order {oid}: entry {seq} is not the one anchored"
                problems.append((oid, Problem("anchor", seq, message)))
    return problems


def anchored_head(session: Session, order_id: int) -> dict[str, Any] | None:
    """The order's latest anchored head and its anchor (no Merkle proof: see `proof_for`)."""
    row = session.execute(
        select(AuditAnchorHead, AuditAnchor)
        .join(AuditAnchor, AuditAnchor.id == AuditAnchorHead.anchor_id)
        .where(AuditAnchorHead.order_id == order_id)
        .order_by(AuditAnchorHead.anchor_id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    head, anchor_row = row
    return {
        "anchor": record(anchor_row),
        "leaf": {"order_id": order_id, "seq": head.seq, "hash": head.hash},
    }


def proof_for(session: Session, order_id: int) -> dict[str, Any] | None:
    """The latest anchor, the order's leaf under it, and the Merkle proof (for bundles)."""
    last = latest(session)
    if last is None:
        return None
    heads = anchored_heads(session, last.id)
    if order_id not in heads:
        return None
    ordered = sorted(heads)
    leaves = [merkle_leaf(oid, *heads[oid]) for oid in ordered]
    seq, digest = heads[order_id]
    return {
        "anchor": record(last),
        "leaf": {"order_id": order_id, "seq": seq, "hash": digest},
        "proof": merkle_proof(leaves, ordered.index(order_id)),
    }


# --- outside the database ------------------------------------------------------------------


def read_exported(directory: Path) -> list[dict[str, Any]]:
    path = directory / ANCHOR_FILE
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def export_missing(session: Session, directory: Path) -> int:
    """Append to anchors.jsonl every anchor not yet in it (fsynced); returns how many."""
    directory.mkdir(parents=True, exist_ok=True)
    exported = {int(a["id"]) for a in read_exported(directory)}
    query = select(AuditAnchor).order_by(AuditAnchor.id)
    if exported:
        query = query.where(AuditAnchor.id.not_in(exported))
    missing = session.scalars(query).all()
    if not missing:
        return 0
    with (directory / ANCHOR_FILE).open("a", encoding="utf-8") as f:
        for a in missing:
            f.write(json.dumps(record(a), sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return len(missing)


def anchor_now(db: Database, export_dir: Path | None) -> Anchored:
    """Anchor in its own transaction, then export (a crash in between is caught up next time)."""
    with db.transaction() as session:
        result = anchor(session)
    if export_dir is not None:
        with db.read() as session:
            export_missing(session, export_dir)
    return result


def anchor_if_due(db: Database, export_dir: Path | None, every_seconds: float) -> bool:
    """For a worker loop: anchor when the latest anchor is older than `every_seconds`."""
    with db.read() as session:
        last_at = session.scalar(select(func.max(AuditAnchor.at)))
    if last_at is not None and now() - last_at < timedelta(seconds=every_seconds):
        return False
    anchor_now(db, export_dir)
    return True


# --- checking the anchors themselves --------------------------------------------------------


def verify_anchors(session: Session, export_dir: Path | None) -> list[Problem]:
    """The anchor chain is unbroken, the latest root matches its heads, and the file agrees."""
    problems: list[Problem] = []
    rows = session.scalars(select(AuditAnchor).order_by(AuditAnchor.id)).all()
    prev, expected = GENESIS, 1
    for a in rows:
        rec = record(a)
        if a.id != expected:
            problems.append(
                Problem("anchor", None, f"anchors {expected} to {a.id - 1} are missing")
            )
        if anchor_hash(rec) != a.hash:
            problems.append(Problem("anchor", None, f"anchor #{a.id} was altered"))
        if a.prev_hash != prev:
            problems.append(
                Problem("anchor", None, f"anchor #{a.id} does not follow the anchor before it")
            )
        prev, expected = a.hash, a.id + 1
    if rows and root_of(anchored_heads(session, rows[-1].id)) != rows[-1].root:
        problems.append(
            Problem(
                "anchor",
                None,
                f"the heads stored for anchor #{rows[-1].id} do not give its root: "
                "the anchored heads were altered",
            )
        )
    if export_dir is not None:
        problems += _compare_with_file(rows, read_exported(export_dir), export_dir)
    return problems


def _compare_with_file(
    rows: Any, exported: list[dict[str, Any]], export_dir: Path
) -> list[Problem]:
    problems: list[Problem] = []
    in_db = {a.id: a.hash for a in rows}
    in_file = {int(a["id"]): a["hash"] for a in exported}
    where = export_dir / ANCHOR_FILE
    for number, digest in sorted(in_file.items()):
        if number not in in_db:
            problems.append(
                Problem(
                    "anchor",
                    None,
                    f"anchor #{number} is in {where} but not in the database: anchors were removed",
                )
            )
        elif in_db[number] != digest:
            problems.append(
                Problem("anchor", None, f"anchor #{number} differs from its copy in {where}")
            )
    for number in sorted(set(in_db) - set(in_file)):
        problems.append(Problem("anchor", None, f"anchor #{number} was never exported to {where}"))
    return problems
