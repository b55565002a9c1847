"""The history is append-only in the database, and every kind of tampering is found, precisely.

Each test runs on SQLite and on PostgreSQL. To tamper, a test bypasses the append-only triggers
(drops them on SQLite, `session_replication_role = replica` on PostgreSQL), as an attacker with
the database's keys could: the point is that verification still catches it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from orderflow.audit import anchors, archive, chain, signing
from orderflow.audit.chain import iso
from orderflow.audit.models import AuditAnchor, AuditAnchorHead, AuditEntry
from orderflow.audit.verify_bundle import anchor_hash, check_chain
from orderflow.catalog import service as catalog
from orderflow.catalog.models import Product
from orderflow.db import Database
from orderflow.orders.models import Order
from orderflow.orders.service import LineRequest, place_order

ADDRESS = {"line1": "1 High St", "city": "London", "postcode": "N1 1AA", "country": "GB"}


def order_with_history(db: Database, entries: int = 6) -> int:
    """An order whose chain has `entries` entries: placed, then test steps 2..n."""
    with db.transaction() as s:
        if s.get(Product, "WIDGET") is None:
            catalog.create_product(
                s, sku="WIDGET", name="Widget", price=1299, currency="GBP", weight_grams=1, stock=99
            )
        customer = catalog.create_customer(
            s, name="Ada", email="ada@example.com", phone=None, address=ADDRESS, payment_method="pm"
        )
        order, _ = place_order(
            s, customer_id=customer.id, lines=[LineRequest("WIDGET", 2)], actor="admin:api"
        )
        for n in range(2, entries + 1):
            chain.record(s, order.id, actor="worker:test", action=f"test.step{n}", details={"n": n})
        return order.id


@contextmanager
def tampering(db: Database) -> Iterator[Connection]:
    """A transaction in which the append-only triggers do not fire (restored afterwards)."""
    with db.engine.begin() as conn:
        if db.is_sqlite:
            triggers = conn.execute(
                text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
            ).all()
            for name, _ in triggers:
                conn.execute(text(f"DROP TRIGGER {name}"))
            yield conn
            for _, sql in triggers:
                conn.execute(text(sql))
        else:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            yield conn


def entry(conn: Connection, order_id: int, seq: int) -> Any:
    return conn.execute(
        select(AuditEntry).where(AuditEntry.order_id == order_id, AuditEntry.seq == seq)
    ).one()


def verdict(db: Database, order_id: int) -> chain.Verdict:
    with db.read() as session:
        return chain.verify_order(session, order_id)


def kinds(v: chain.Verdict) -> set[str]:
    return {f.kind for f in v.findings}


def test_database_refuses_update_and_delete_of_history(db: Database) -> None:
    """UPDATE and DELETE on audit entries and anchors fail in the database itself."""
    order_id = order_with_history(db, 3)
    anchors.anchor_now(db, None)
    statements = [
        update(AuditEntry).where(AuditEntry.order_id == order_id).values(actor="admin:mallory"),
        delete(AuditEntry).where(AuditEntry.order_id == order_id, AuditEntry.seq == 3),
        update(AuditAnchor).values(root="0" * 64),
        delete(AuditAnchor),
    ]
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as conn:
            conn.execute(statement)
    assert verdict(db, order_id).ok and verdict(db, order_id).entries == 3


def test_an_untouched_history_verifies(db: Database) -> None:
    """Entries written by the use cases verify, and say so with no problems."""
    order_id = order_with_history(db)
    v = verdict(db, order_id)
    assert v.ok and v.entries == 6 and v.problems == []


def test_a_changed_field_is_found(db: Database) -> None:
    """Changing one field of one entry: that entry is reported as altered."""
    order_id = order_with_history(db)
    with tampering(db) as conn:
        conn.execute(
            update(AuditEntry)
            .where(AuditEntry.order_id == order_id, AuditEntry.seq == 3)
            .values(details={"n": 300})
        )
    v = verdict(db, order_id)
    assert not v.ok
    assert v.problems == [
        "entry 3 (test.step3) was altered after it was written: "
        "its content no longer matches its hash"
    ]


def test_a_deleted_entry_is_found(db: Database) -> None:
    """Deleting an entry in the middle: the gap is named."""
    order_id = order_with_history(db)
    with tampering(db) as conn:
        conn.execute(delete(AuditEntry).where(AuditEntry.order_id == order_id, AuditEntry.seq == 3))
    v = verdict(db, order_id)
    assert v.problems == ["entry 3 is missing (deleted): entry 4 follows entry 2"]


def test_an_inserted_entry_is_found(db: Database) -> None:
    """A forged entry slipped in (later ones renumbered, head moved): the forgery is named."""
    order_id = order_with_history(db)
    with tampering(db) as conn:
        for seq in range(6, 2, -1):
            conn.execute(
                update(AuditEntry)
                .where(AuditEntry.order_id == order_id, AuditEntry.seq == seq)
                .values(seq=seq + 1)
            )
        before = entry(conn, order_id, 2)
        forged: dict[str, Any] = {
            "order_id": order_id,
            "seq": 3,
            "at": before.at + timedelta(seconds=1),
            "actor": "admin:api",
            "action": "payment.refunded",
            "from_status": None,
            "to_status": None,
            "details": {"amount": 2598},
        }
        digest = chain.entry_hash(**forged, prev_hash=before.hash)
        conn.execute(insert(AuditEntry).values(**forged, prev_hash=before.hash, hash=digest))
        conn.execute(update(Order).where(Order.id == order_id).values(audit_seq=7))
    v = verdict(db, order_id)
    assert "inserted" in kinds(v)
    assert (
        "entry 3 (payment.refunded) was inserted: "
        "entry 4 was written directly after the entry before it"
    ) in v.problems
    assert "entry 4 (test.step3) was entry 3 when it was written: it has been renumbered" in (
        v.problems
    )


def test_a_reordering_is_found(db: Database) -> None:
    """Swapping two entries' places: the reordering is named."""
    order_id = order_with_history(db)
    with tampering(db) as conn:
        for seq, to in ((3, 1000), (4, 3), (1000, 4)):
            conn.execute(
                update(AuditEntry)
                .where(AuditEntry.order_id == order_id, AuditEntry.seq == seq)
                .values(seq=to)
            )
    v = verdict(db, order_id)
    assert "reordered" in kinds(v)
    assert (
        "entry 3 (test.step4) was written after entry 4 (test.step3) but now comes before it: "
        "the history was reordered"
    ) in v.problems


def test_a_truncated_tail_is_found_by_the_anchor(db: Database, tmp_path: Path) -> None:
    """Latest entries removed AND the order's head moved back: only the anchor can tell."""
    order_id = order_with_history(db)
    anchors.anchor_now(db, tmp_path)
    with tampering(db) as conn:
        kept = entry(conn, order_id, 4)
        conn.execute(delete(AuditEntry).where(AuditEntry.order_id == order_id, AuditEntry.seq > 4))
        conn.execute(
            update(Order).where(Order.id == order_id).values(audit_seq=4, audit_head=kept.hash)
        )
    with db.read() as session:
        # The remaining chain is self-consistent: without an anchor this would pass.
        remaining = [chain.as_dict(e) for e in chain.entries_of(session, order_id)]
        assert check_chain(remaining) == []
    v = verdict(db, order_id)
    assert kinds(v) == {"truncated"}
    assert v.problems[0].startswith("the chain ends at entry 4, but anchor #1 of ")
    assert v.problems[0].endswith("saw entry 6: entries 5 to 6 were removed (truncated tail)")
    # A later anchor refuses to bless the shorter chain.
    again = anchors.anchor_now(db, tmp_path)
    assert [p.kind for p in again.refused] == ["truncated"]
    assert kinds(verdict(db, order_id)) == {"truncated"}


def test_a_truncated_tail_with_the_head_left_is_found(db: Database) -> None:
    """Latest entries removed, head untouched: the order row itself tells."""
    order_id = order_with_history(db)
    with tampering(db) as conn:
        conn.execute(delete(AuditEntry).where(AuditEntry.order_id == order_id, AuditEntry.seq == 6))
    assert verdict(db, order_id).problems == [
        "the order's head is entry 6, but the chain ends at entry 5: "
        "its latest entries were removed (truncated tail)"
    ]


def test_removed_or_altered_anchors_are_found_through_the_exported_copy(
    db: Database, tmp_path: Path
) -> None:
    """Anchors deleted from the database, or rewritten, disagree with anchors.jsonl."""
    order_with_history(db, 2)
    anchors.anchor_now(db, tmp_path)
    anchors.anchor_now(db, tmp_path)
    with db.read() as session:
        assert anchors.verify_anchors(session, tmp_path) == []
    with tampering(db) as conn:
        conn.execute(delete(AuditAnchor).where(AuditAnchor.id == 2))
    with db.read() as session:
        problems = [p.message for p in anchors.verify_anchors(session, tmp_path)]
    assert problems == [
        f"anchor #2 is in {tmp_path / 'anchors.jsonl'} but not in the database: "
        "anchors were removed"
    ]


def test_retention_archives_old_entries_and_the_chain_stays_provable(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries 1-3 go to a verifiable archive and leave the table; 4-6 and later still verify."""
    order_id = order_with_history(db)
    with db.read() as session:
        third = chain.entries_of(session, order_id)[2]
    monkeypatch.setattr(archive, "now", lambda: third.at + timedelta(microseconds=1))
    done = archive.archive_all(db, older_than=timedelta(0), directory=tmp_path)
    assert [(a.orders, a.entries) for a in done] == [(1, 3)]
    assert archive.verify_file(done[0].path) == []
    with db.read() as session:
        assert [e.seq for e in chain.entries_of(session, order_id)] == [4, 5, 6]
        assert archive.verify_archives(session, tmp_path) == []
        assert [e["seq"] for e in archive.archived_entries(session, order_id, tmp_path)] == [
            1,
            2,
            3,
        ]
    assert verdict(db, order_id).ok
    with db.transaction() as session:
        chain.record(session, order_id, actor="worker:test", action="test.after_archive")
    assert verdict(db, order_id).ok
    # Hot (not archived) entries still cannot be deleted.
    with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as conn:
        if not db.is_sqlite:
            conn.execute(text("SET LOCAL orderflow.audit_purge = 'on'"))
        conn.execute(delete(AuditEntry).where(AuditEntry.order_id == order_id))


def test_cli_anchors_and_verifies_everything(db: Database, tmp_path: Path) -> None:
    """`audit anchor` exports to the anchor dir; `audit verify` passes, then fails on tampering."""
    from click.testing import CliRunner

    from orderflow.cli import main

    order_id = order_with_history(db, 3)
    env = {"ORDERFLOW_DATABASE_URL": db.url, "ORDERFLOW_AUDIT_ANCHOR_DIR": str(tmp_path)}
    runner = CliRunner()
    anchored = runner.invoke(main, ["audit", "anchor"], env=env)
    assert anchored.exit_code == 0, anchored.output
    assert anchored.output.startswith("anchor #1: 1 orders, 1 heads moved")
    assert (tmp_path / "anchors.jsonl").read_text().count("\n") == 1
    ok = runner.invoke(main, ["audit", "verify"], env=env)
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith("OK: 1 orders, 3 entries verified, anchors match ")
    with tampering(db) as conn:
        conn.execute(
            update(AuditEntry)
            .where(AuditEntry.order_id == order_id, AuditEntry.seq == 2)
            .values(actor="admin:mallory")
        )
    failed = runner.invoke(main, ["audit", "verify"], env=env)
    assert failed.exit_code == 1
    assert "[altered] entry 2 (test.step2) was altered after it was written" in failed.output


# --- signed anchors ---------------------------------------------------------------------------


@pytest.fixture
def signer(tmp_path: Path) -> signing.Signer:
    private, _, _ = signing.keygen(tmp_path / "keys")
    return signing.load_signer(private)


def forge_anchor(db: Database, moved: anchors.Heads, *, copy_signature: bool = True) -> int:
    """What someone with write access to the database (but not the key) can do: a new anchor
    over the heads they want, hash recomputed and chained to the latest; the latest anchor's
    signature and key id copied onto it (or none)."""
    with db.read() as session:
        previous = anchors.latest(session)
        assert previous is not None
        heads = {**anchors.anchored_heads(session), **moved}
        fields: dict[str, Any] = {
            "id": previous.id + 1,
            "at": iso(previous.at + timedelta(seconds=1)),
            "orders": len(heads),
            "root": anchors.root_of(heads),
            "prev_hash": previous.hash,
        }
        signature, key = previous.signature, previous.key_id
    with db.engine.begin() as conn:  # INSERT is all it takes: the triggers refuse only changes
        conn.execute(
            insert(AuditAnchor).values(
                id=fields["id"],
                at=previous.at + timedelta(seconds=1),
                orders=fields["orders"],
                root=fields["root"],
                prev_hash=fields["prev_hash"],
                hash=anchor_hash(fields),
                signature=signature if copy_signature else None,
                key_id=key if copy_signature else None,
            )
        )
        for oid, (seq, digest) in moved.items():
            conn.execute(
                insert(AuditAnchorHead).values(
                    order_id=oid, anchor_id=fields["id"], seq=seq, hash=digest
                )
            )
    return int(fields["id"])


def test_a_signed_anchor_verifies_and_forged_ones_are_found(
    db: Database, signer: signing.Signer
) -> None:
    """A genuine signed anchor passes; forged ones (hash recomputed, a copied signature or
    none) are found by their signatures, and anchoring refuses to build on them."""
    order_id = order_with_history(db, 3)
    made = anchors.anchor_now(db, None, signer)
    assert made.anchor["key_id"] == signer.key_id and made.anchor["signature"]
    with db.read() as session:
        assert anchors.verify_anchors(session, None, signer.public_key) == []
        assert chain.verify_order(session, order_id, signer.public_key).ok
    with db.read() as session:
        head = anchors.current_heads(session)[order_id]
    copied = forge_anchor(db, {order_id: head})
    unsigned = forge_anchor(db, {order_id: head}, copy_signature=False)
    with db.read() as session:
        assert anchors.verify_anchors(session, None) == []  # without the key: undetectable
        problems = [p.message for p in anchors.verify_anchors(session, None, signer.public_key)]
    assert problems == [
        f"anchor #{copied}'s signature does not verify: the anchor was forged or altered",
        f"anchor #{unsigned} is not signed although anchor #1 before it is: it was forged",
    ]
    with pytest.raises(anchors.AnchorRefused, match="signature"):
        anchors.anchor_now(db, None, signer)


def test_a_rewrite_covered_by_a_forged_anchor_is_caught_by_the_signatures(
    db: Database, signer: signing.Signer
) -> None:
    """History rewritten after the last genuine anchor and covered by a forged anchor over the
    new head: unsigned anchors let it pass; with signatures the forgery and the rewrite show."""
    order_id = order_with_history(db)
    anchors.anchor_now(db, None, signer)
    with tampering(db) as conn:  # entry 5 says something else now; 5 and 6 re-hashed
        prev = entry(conn, order_id, 4).hash
        for seq in (5, 6):
            e = entry(conn, order_id, seq)
            details = {"n": 500} if seq == 5 else e.details
            digest = chain.entry_hash(
                order_id=order_id,
                seq=seq,
                at=e.at,
                actor=e.actor,
                action=e.action,
                from_status=e.from_status,
                to_status=e.to_status,
                details=details,
                prev_hash=prev,
            )
            conn.execute(
                update(AuditEntry)
                .where(AuditEntry.id == e.id)
                .values(details=details, prev_hash=prev, hash=digest)
            )
            prev = digest
        conn.execute(update(Order).where(Order.id == order_id).values(audit_head=prev))
    assert "anchor" in kinds(verdict(db, order_id))  # anchor #1 still tells, so far
    forged = forge_anchor(db, {order_id: (6, prev)})

    # Unsigned (the old way): the forged anchor blesses the rewrite; nothing is found.
    assert verdict(db, order_id).ok
    with db.read() as session:
        assert anchors.verify_anchors(session, None) == []
        signed_check = chain.verify_order(session, order_id, signer.public_key)
        anchor_problems = anchors.verify_anchors(session, None, signer.public_key)
    assert not signed_check.ok and signed_check.anchor_id == 1
    assert signed_check.problems[0] == (
        f"anchor #{forged}'s signature does not verify: the anchor was forged or altered "
        "(it covers this order)"
    )
    assert signed_check.problems[1].startswith("entry 6 is not the one anchor #1 of ")
    assert [p.kind for p in anchor_problems] == ["signature"]


def test_cli_keygen_signed_anchors_and_unsigned_ones_before_them(
    db: Database, tmp_path: Path
) -> None:
    """Unsigned anchors (no key: the demo) are reported, not failed; `audit keygen` makes a
    pair, `audit anchor` signs with it, `audit verify` checks with the public key alone."""
    from click.testing import CliRunner

    from orderflow.cli import main

    order_with_history(db, 3)
    runner = CliRunner()
    plain = {"ORDERFLOW_DATABASE_URL": db.url}
    assert runner.invoke(main, ["audit", "anchor"], env=plain).exit_code == 0
    unsigned = runner.invoke(main, ["audit", "verify"], env=plain)
    assert unsigned.exit_code == 0, unsigned.output
    assert "anchors: 1 anchor(s) UNSIGNED (no anchor key configured)" in unsigned.output

    made = runner.invoke(main, ["audit", "keygen", "--out", str(tmp_path / "keys")])
    assert made.exit_code == 0, made.output
    private, public = (
        tmp_path / "keys" / "anchor-signing.key",
        tmp_path / "keys" / "anchor-signing.pub",
    )
    assert private.stat().st_mode & 0o077 == 0
    key_id = signing.load_signer(private).key_id
    with_key = {**plain, "ORDERFLOW_AUDIT_ANCHOR_KEY_FILE": str(private)}
    anchored = runner.invoke(main, ["audit", "anchor"], env=with_key)
    assert anchored.exit_code == 0, anchored.output
    assert f"signed by key {key_id}" in anchored.output
    verifier = {**plain, "ORDERFLOW_AUDIT_ANCHOR_PUBLIC_KEY_FILE": str(public)}
    ok = runner.invoke(main, ["audit", "verify"], env=verifier)
    assert ok.exit_code == 0, ok.output
    assert f"1 anchor(s) signed by key {key_id}, 1 unsigned from before signing began" in ok.output

    with db.read() as session:
        forge_anchor(db, dict(anchors.current_heads(session)))
    forged = runner.invoke(main, ["audit", "verify", "--public-key", str(public)], env=plain)
    assert forged.exit_code == 1
    assert "[signature] anchor #3's signature does not verify" in forged.output
    refused = runner.invoke(main, ["audit", "anchor"], env=with_key)
    assert refused.exit_code == 1 and "not anchoring on top of anchors" in refused.output
