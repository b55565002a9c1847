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

With a signing key (ORDERFLOW_AUDIT_ANCHOR_KEY_FILE, see `orderflow.audit.signing`) every anchor
is signed (Ed25519 over its hash). Someone who can write the database can recompute hashes, so
without signatures they could cover a rewritten history with an anchor of their own; they cannot
sign one. Verification with the public key reports an anchor whose signature does not verify,
one signed by another key, and an unsigned anchor after a signed one; an order is checked
against its latest validly signed anchor. Anchoring refuses to build on an anchor that fails
those checks (the periodic job becomes a dead letter: people must look). Without a key anchors
are unsigned, and verification says so without failing.

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
from orderflow.audit.signing import Signer, public_pem
from orderflow.audit.verify_bundle import (
    GENESIS,
    Problem,
    anchor_hash,
    check_signature,
    key_id,
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
        "signature": a.signature,
        "key_id": a.key_id,
    }


class AnchorRefused(Exception):
    """The anchor chain fails its signature checks: building on it would bless a forgery."""


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


def anchor(session: Session, signer: Signer | None = None) -> Anchored:
    """Anchor every chain head now (in the caller's transaction; export after commit);
    signed when a signer is given, which first checks the signatures of the chain so far."""
    if signer is not None:
        forged = signature_problems(session, signer.public_key)
        if forged:
            raise AnchorRefused(
                "not anchoring on top of anchors that fail their signature check: "
                + "; ".join(p.message for p in forged)
            )
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
        signature=signer.sign(digest) if signer is not None else None,
        key_id=signer.key_id if signer is not None else None,
    )
    session.add(row)
    session.flush()
    session.add_all(
        AuditAnchorHead(order_id=oid, anchor_id=row.id, seq=seq, hash=h)
        for oid, (seq, h) in moved.items()
    )
    session.flush()
    return Anchored(anchor=record(row), moved=len(moved), refused=[p for _, p in refused])


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
    found, _ = trusted_anchored_head(session, order_id, None)
    return found


def trusted_anchored_head(
    session: Session, order_id: int, public_key: bytes | None
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The order's latest anchored head under an anchor `public_key` signed (any anchor when
    no key is given), and a problem for each later anchor of the order passed over (forged)."""
    rows = session.execute(
        select(AuditAnchorHead, AuditAnchor)
        .join(AuditAnchor, AuditAnchor.id == AuditAnchorHead.anchor_id)
        .where(AuditAnchorHead.order_id == order_id)
        .order_by(AuditAnchorHead.anchor_id.desc())
    )
    passed_over: list[Problem] = []
    for head, anchor_row in rows:
        rec = record(anchor_row)
        problem = None if public_key is None else check_signature(rec, public_key)
        from_before_signing = (
            problem is not None
            and problem.kind == "unsigned"
            and not _signed_before(session, anchor_row.id, public_key)
        )
        if problem is not None and not from_before_signing:
            passed_over.append(
                Problem(problem.kind, None, f"{problem.message} (it covers this order)")
            )
            continue
        leaf = {"order_id": order_id, "seq": head.seq, "hash": head.hash}
        return {"anchor": rec, "leaf": leaf}, passed_over
    return None, passed_over


def _signed_before(session: Session, anchor_id: int, public_key: bytes | None) -> bool:
    """Whether an anchor before `anchor_id` is validly signed by `public_key`."""
    if public_key is None:
        return False
    rows = session.scalars(
        select(AuditAnchor)
        .where(AuditAnchor.id < anchor_id, AuditAnchor.signature.is_not(None))
        .order_by(AuditAnchor.id)
    )
    return any(check_signature(record(a), public_key) is None for a in rows)


def proof_for(
    session: Session, order_id: int, public_key: bytes | None = None
) -> dict[str, Any] | None:
    """The latest anchor, the order's leaf under it, and the Merkle proof (for bundles); with
    `public_key`, the latest anchor it validly signed, carrying the public key."""
    last = latest(session)
    if public_key is not None:
        last = latest_trusted(session, public_key)
    if last is None:
        return None
    heads = anchored_heads(session, last.id)
    if order_id not in heads:
        return None
    ordered = sorted(heads)
    leaves = [merkle_leaf(oid, *heads[oid]) for oid in ordered]
    seq, digest = heads[order_id]
    proof = {
        "anchor": record(last),
        "leaf": {"order_id": order_id, "seq": seq, "hash": digest},
        "proof": merkle_proof(leaves, ordered.index(order_id)),
    }
    if public_key is not None:
        proof["public_key"] = public_pem(public_key)
    return proof


def latest_trusted(session: Session, public_key: bytes) -> AuditAnchor | None:
    """The latest anchor validly signed by `public_key`, else the latest unsigned one made
    before any signed anchor (an unsigned history, from before signing began)."""
    rows = session.scalars(select(AuditAnchor).order_by(AuditAnchor.id.desc()))
    fallback: AuditAnchor | None = None
    for a in rows:
        problem = check_signature(record(a), public_key)
        if problem is None:
            return a
        if problem.kind == "unsigned" and fallback is None:
            fallback = a
    return fallback


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


def anchor_now(db: Database, export_dir: Path | None, signer: Signer | None = None) -> Anchored:
    """Anchor in its own transaction, then export (a crash in between is caught up next time)."""
    with db.transaction() as session:
        result = anchor(session, signer)
    if export_dir is not None:
        with db.read() as session:
            export_missing(session, export_dir)
    return result


def anchor_if_due(
    db: Database, export_dir: Path | None, every_seconds: float, signer: Signer | None = None
) -> bool:
    """For a worker loop: anchor when the latest anchor is older than `every_seconds`."""
    with db.read() as session:
        last_at = session.scalar(select(func.max(AuditAnchor.at)))
    if last_at is not None and now() - last_at < timedelta(seconds=every_seconds):
        return False
    anchor_now(db, export_dir, signer)
    return True


# --- checking the anchors themselves --------------------------------------------------------


def signature_problems(session: Session, public_key: bytes) -> list[Problem]:
    """Anchors `public_key` did not sign although it should have: a bad signature, another
    key's, or none after an anchor it signed (unsigned anchors before signing began are fine)."""
    problems: list[Problem] = []
    signed_seen: int | None = None
    for a in session.scalars(select(AuditAnchor).order_by(AuditAnchor.id)):
        problem = check_signature(record(a), public_key)
        if problem is None:
            signed_seen = a.id
        elif problem.kind != "unsigned":
            problems.append(problem)
        elif signed_seen is not None:
            message = (
                f"anchor #{a.id} is not signed although anchor #{signed_seen} before it is: "
                "it was forged"
            )
            problems.append(Problem("signature", None, message))
    return problems


def signature_status(session: Session, public_key: bytes | None) -> str:
    """One phrase on the anchors' signatures, for `orderflow audit verify`."""
    rows = session.scalars(select(AuditAnchor).order_by(AuditAnchor.id)).all()
    signed = [a for a in rows if a.signature]
    if not rows:
        return "no anchors yet"
    if public_key is None:
        return (
            f"{len(rows) - len(signed)} anchor(s) unsigned, {len(signed)} signed but not "
            "checked (no ORDERFLOW_AUDIT_ANCHOR_PUBLIC_KEY_FILE or _KEY_FILE)"
            if signed
            else f"{len(rows)} anchor(s) UNSIGNED (no anchor key configured)"
        )
    valid = sum(1 for a in rows if check_signature(record(a), public_key) is None)
    unsigned = len(rows) - len(signed)
    note = f", {unsigned} unsigned from before signing began" if unsigned else ""
    return f"{valid} anchor(s) signed by key {key_id(public_key)}{note}"


def verify_anchors(
    session: Session, export_dir: Path | None, public_key: bytes | None = None
) -> list[Problem]:
    """The anchor chain is unbroken, the latest root matches its heads, the file agrees, and
    (with `public_key`) every anchor since signing began is signed by it."""
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
    if public_key is not None:
        problems += signature_problems(session, public_key)
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
