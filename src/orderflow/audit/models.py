"""The audit tables: the per-order hash chains, their anchors, and their archives.

All four tables are append-only: database triggers (migration `c874640cc287`) refuse every
UPDATE and DELETE, with one controlled exception: an `audit_entries` row may be deleted once an
`audit_archived` row says an archive holds it (see `orderflow.audit.archive`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from orderflow.db import Base, BigId, UTCDateTime


class AuditEntry(Base):
    """One entry of an order's history; its hash covers its content and the previous hash."""

    __tablename__ = "audit_entries"
    __table_args__ = (
        UniqueConstraint("order_id", "seq"),
        Index("ix_audit_entries_to_status_at", "to_status", "at"),  # deliveries per minute
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(100))  # admin:<token name> | worker:<id> | carrier
    action: Mapped[str] = mapped_column(String(64))
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str | None] = mapped_column(String(32))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditAnchor(Base):
    """A Merkle root over every order's chain head at one moment, chained to the anchor before.

    Each anchor is also appended to a file outside the database (`anchors.jsonl`), so that
    removing the latest entries of a chain (and moving its head back) is detectable.
    """

    __tablename__ = "audit_anchors"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)  # 1, 2, 3… (the anchor number)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    orders: Mapped[int] = mapped_column(Integer)  # leaves under the root
    root: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # Ed25519 over "orderflow-anchor/1:" + hash, by the key outside the database whose id
    # (first 16 hex digits of the public key's SHA-256) is `key_id`; NULL: unsigned.
    signature: Mapped[str | None] = mapped_column(String(128))
    key_id: Mapped[str | None] = mapped_column(String(16))


class AuditAnchorHead(Base):
    """The heads an anchor covers, stored as deltas: only heads that moved since the last one.

    The full set of leaves under anchor N is, for each order, its latest row with anchor <= N.
    """

    __tablename__ = "audit_anchor_heads"

    order_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    anchor_id: Mapped[int] = mapped_column(ForeignKey("audit_anchors.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class AuditArchive(Base):
    """One compressed archive file of old entries, with its digest."""

    __tablename__ = "audit_archives"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cutoff: Mapped[datetime] = mapped_column(UTCDateTime)  # entries before this were archived
    file_name: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(String(64))
    orders: Mapped[int] = mapped_column(Integer)
    entries: Mapped[int] = mapped_column(Integer)


class AuditArchived(Base):
    """An order's entries 1..through_seq are in an archive; the hot chain resumes after it."""

    __tablename__ = "audit_archived"
    __table_args__ = (UniqueConstraint("order_id", "through_seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    archive_id: Mapped[int] = mapped_column(ForeignKey("audit_archives.id"))
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    through_seq: Mapped[int] = mapped_column(Integer)
    through_hash: Mapped[str] = mapped_column(String(64))
