"""Retention: old entries go to compressed, verifiable archives, and only then leave the table.

An archive is a gzip file of JSON lines: a header, then one line per order with the entries it
takes (seq start+1..through) and where they continue a chain from (`start`: genesis or the
previous archive's last entry). It is verified on its own (`verify_file`): each order's entries
must form an unbroken chain from its start. Its SHA-256 is kept in `audit_archives`, and for
each order `audit_archived` records the last archived entry (seq and hash): the hot chain
resumes from that hash, so the remaining history stays provable.

The order of things makes it safe: the file is written and fsynced first, then in ONE
transaction the bookkeeping rows are inserted and the archived entries deleted. That delete is
the only one the append-only triggers let through: on both databases only rows an
`audit_archived` row covers, and on PostgreSQL only in a transaction that said
`SET LOCAL orderflow.audit_purge = 'on'`. A chain that does not verify is never archived.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from orderflow.audit import chain
from orderflow.audit.models import AuditArchive, AuditArchived, AuditEntry
from orderflow.audit.verify_bundle import Problem, check_chain
from orderflow.clock import now
from orderflow.db import Database

ARCHIVE_FORMAT = "orderflow-audit-archive/1"


@dataclass(frozen=True)
class Archived:
    archive_id: int
    path: Path
    orders: int
    entries: int
    skipped: list[str]  # orders whose chain did not verify: kept hot, for people to look at


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def archive_once(
    db: Database, *, older_than: timedelta, directory: Path, max_orders: int = 1000
) -> Archived | None:
    """Archive the entries older than `older_than` of up to `max_orders` orders (one file)."""
    cutoff = now() - older_than
    directory.mkdir(parents=True, exist_ok=True)
    with db.transaction() as session:
        candidates = session.execute(
            select(AuditEntry.order_id, func.max(AuditEntry.seq))
            .where(AuditEntry.at < cutoff)
            .group_by(AuditEntry.order_id)
            .order_by(AuditEntry.order_id)
            .limit(max_orders)
        ).all()
        if not candidates:
            return None
        archive_id = (session.scalar(select(func.max(AuditArchive.id))) or 0) + 1
        created = now()
        path = directory / f"audit-archive-{archive_id:06d}-{created:%Y%m%dT%H%M%S}.jsonl.gz"
        taken: list[tuple[int, int, str]] = []
        skipped: list[str] = []
        count = 0
        with gzip.open(path, "wt", encoding="utf-8") as out:
            header = {
                "format": ARCHIVE_FORMAT,
                "archive_id": archive_id,
                "created_at": chain.iso(created),
                "cutoff": chain.iso(cutoff),
            }
            out.write(json.dumps(header, sort_keys=True) + "\n")
            for order_id, through in candidates:
                start = chain.chain_start(session, order_id)
                entries = [
                    chain.as_dict(e)
                    for e in session.scalars(
                        select(AuditEntry)
                        .where(AuditEntry.order_id == order_id, AuditEntry.seq <= through)
                        .order_by(AuditEntry.seq)
                    )
                ]
                problems = check_chain(entries, start_seq=start.seq, start_hash=start.hash)
                if problems or not entries:
                    skipped.append(f"order {order_id}: {'; '.join(p.message for p in problems)}")
                    continue
                line = {
                    "order_id": order_id,
                    "start": {"seq": start.seq, "hash": start.hash},
                    "entries": entries,
                }
                out.write(json.dumps(line, sort_keys=True, ensure_ascii=False) + "\n")
                taken.append((order_id, int(entries[-1]["seq"]), entries[-1]["hash"]))
                count += len(entries)
        if not taken:
            path.unlink()
            return Archived(0, path, 0, 0, skipped)
        with path.open("rb+") as f:
            os.fsync(f.fileno())
        if problems_in := verify_file(path):
            raise RuntimeError(f"the archive just written does not verify: {problems_in[0]}")
        session.add(
            AuditArchive(
                id=archive_id,
                created_at=created,
                cutoff=cutoff,
                file_name=path.name,
                sha256=file_digest(path),
                orders=len(taken),
                entries=count,
            )
        )
        session.flush()
        session.add_all(
            AuditArchived(archive_id=archive_id, order_id=oid, through_seq=seq, through_hash=h)
            for oid, seq, h in taken
        )
        session.flush()
        purge(session, [(oid, seq) for oid, seq, _ in taken])
    return Archived(archive_id, path, len(taken), count, skipped)


def purge(session: Session, archived: list[tuple[int, int]]) -> None:
    """Delete archived entries: the one DELETE the triggers allow (see the module docstring)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL orderflow.audit_purge = 'on'"))
    for order_id, through in archived:
        session.execute(
            delete(AuditEntry).where(AuditEntry.order_id == order_id, AuditEntry.seq <= through)
        )
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL orderflow.audit_purge = 'off'"))


def archive_all(
    db: Database, *, older_than: timedelta, directory: Path, max_orders: int = 1000
) -> list[Archived]:
    done: list[Archived] = []
    while (
        one := archive_once(db, older_than=older_than, directory=directory, max_orders=max_orders)
    ) is not None:
        done.append(one)
        if one.orders == 0:
            break  # everything left is skipped: do not loop on it
    return done


def read_file(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        header = json.loads(f.readline())
        return header, [json.loads(line) for line in f if line.strip()]


def verify_file(path: Path) -> list[Problem]:
    """Each order's entries in the archive form an unbroken chain from their start."""
    header, orders = read_file(path)
    if header.get("format") != ARCHIVE_FORMAT:
        return [Problem("format", None, f"{path.name} is not an {ARCHIVE_FORMAT} file")]
    problems: list[Problem] = []
    for o in orders:
        found = check_chain(
            o["entries"], start_seq=o["start"]["seq"], start_hash=o["start"]["hash"]
        )
        problems += [
            Problem(p.kind, p.seq, f"{path.name}, order {o['order_id']}: {p.message}")
            for p in found
        ]
    return problems


def verify_archives(session: Session, directory: Path) -> list[Problem]:
    """Every recorded archive is where it should be, unchanged, and agrees with the table."""
    problems: list[Problem] = []
    for a in session.scalars(select(AuditArchive).order_by(AuditArchive.id)):
        path = directory / a.file_name
        if not path.exists():
            problems.append(Problem("archive", None, f"archive {a.file_name} is missing"))
            continue
        if file_digest(path) != a.sha256:
            problems.append(Problem("archive", None, f"archive {a.file_name} was altered"))
            continue
        problems += verify_file(path)
        _, orders = read_file(path)
        ends = {o["order_id"]: (o["entries"][-1]["seq"], o["entries"][-1]["hash"]) for o in orders}
        for r in session.scalars(select(AuditArchived).where(AuditArchived.archive_id == a.id)):
            if ends.get(r.order_id) != (r.through_seq, r.through_hash):
                problems.append(
                    Problem(
                        "archive",
                        r.through_seq,
                        f"order {r.order_id}: archive {a.file_name} does not end at the recorded "
                        f"entry {r.through_seq}",
                    )
                )
    return problems


def archived_entries(session: Session, order_id: int, directory: Path) -> list[dict[str, Any]]:
    """The order's archived entries (from the files), oldest first; [] when none or missing."""
    names = session.execute(
        select(AuditArchive.file_name)
        .join(AuditArchived, AuditArchived.archive_id == AuditArchive.id)
        .where(AuditArchived.order_id == order_id)
        .order_by(AuditArchived.through_seq)
    ).scalars()
    entries: list[dict[str, Any]] = []
    for name in names:
        path = directory / name
        if not path.exists():
            return []
        _, orders = read_file(path)
        entries += next((o["entries"] for o in orders if o["order_id"] == order_id), [])
    return entries


def oldest_hot_entry(session: Session) -> datetime | None:
    return session.scalar(select(func.min(AuditEntry.at)))
