"""The pure parts of the audit: chain checking, Merkle proofs, money and plain language."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from orderflow.audit import chain, timeline
from orderflow.audit.verify_bundle import (
    GENESIS,
    check_chain,
    entry_content,
    entry_hash,
    merkle_leaf,
    merkle_proof,
    merkle_root,
    root_from_proof,
)

T0 = datetime(2026, 1, 2, 10, 2, 11, tzinfo=UTC)


def built(n: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    prev = GENESIS
    for seq in range(1, n + 1):
        e: dict[str, Any] = {
            "order_id": 7,
            "seq": seq,
            "at": chain.iso(T0 + timedelta(seconds=seq)),
            "actor": "worker:test",
            "action": f"step{seq}",
            "from": None,
            "to": None,
            "details": {"n": seq},
            "prev_hash": prev,
        }
        e["hash"] = entry_hash(entry_content(e))
        prev = e["hash"]
        entries.append(e)
    return entries


def test_chain_hash_matches_the_standalone_verifier() -> None:
    """orderflow's entry_hash and the offline verifier's are one and the same function."""
    e = built(1)[0]
    assert e["hash"] == chain.entry_hash(
        order_id=7,
        seq=1,
        at=T0 + timedelta(seconds=1),
        actor="worker:test",
        action="step1",
        from_status=None,
        to_status=None,
        details={"n": 1},
        prev_hash=GENESIS,
    )


def test_each_tampering_gets_its_own_kind() -> None:
    """Altered, missing, reordered and inserted chains are told apart; a good one passes."""
    assert check_chain(built(5)) == []
    altered = built(5)
    altered[1]["details"] = {"n": 99}
    assert [p.kind for p in check_chain(altered)] == ["altered"]
    missing = built(5)
    del missing[2]
    assert [p.kind for p in check_chain(missing)] == ["missing"]
    swapped = built(5)
    swapped[1]["seq"], swapped[2]["seq"] = 3, 2
    swapped[1], swapped[2] = swapped[2], swapped[1]
    assert {p.kind for p in check_chain(swapped)} == {"renumbered", "reordered"}
    inserted = built(5)
    forged = {**inserted[1], "seq": 3, "action": "forged", "prev_hash": inserted[1]["hash"]}
    forged["hash"] = entry_hash(entry_content(forged))
    shifted = [{**e, "seq": e["seq"] + 1} for e in inserted[2:]]
    kinds = [p.kind for p in check_chain([*inserted[:2], forged, *shifted])]
    assert "inserted" in kinds and set(kinds) == {"inserted", "renumbered"}


def test_merkle_proofs_hold_for_every_leaf_of_every_size() -> None:
    """Every leaf of trees of 1 to 17 leaves proves up to the root; a wrong leaf does not."""
    for size in range(1, 18):
        leaves = [merkle_leaf(i, i * 2, f"{i:064x}") for i in range(size)]
        root = merkle_root(leaves)
        for index, leaf in enumerate(leaves):
            assert root_from_proof(leaf, merkle_proof(leaves, index)) == root
        wrong = merkle_leaf(999, 1, GENESIS)
        assert root_from_proof(wrong, merkle_proof(leaves, 0)) != root


def test_money_is_written_as_people_write_it() -> None:
    """Minor units with the currency: £25.99, €1,000.00, 1,000 JPY, -$0.05."""
    assert timeline.money(2599, "GBP") == "£25.99"
    assert timeline.money(100000, "EUR") == "€1,000.00"
    assert timeline.money(1000, "JPY") == "1,000 JPY"
    assert timeline.money(-5, "USD") == "-$0.05"
    assert timeline.money(None, "GBP") == "an unknown amount"


def test_timeline_sentences() -> None:
    """Entries read as sentences, with times; unknown actions still read sensibly."""
    e = built(1)[0]
    e.update(action="payment.succeeded", details={"payment_id": "pay_1", "amount": 2599})
    row = timeline.item(e, "GBP")
    assert row["line"] == "10:02:12 payment of £25.99 succeeded (Paydesk pay_1)"
    e.update(action="order.held", actor="admin:api", to="held", details={"reason": "fraud"})
    assert timeline.describe(e) == "order held by admin:api (None → held): fraud"


def test_the_standalone_ed25519_agrees_with_cryptography() -> None:
    """The verifier's pure-Python Ed25519 accepts RFC 8032's vector and `cryptography`'s
    signatures, and refuses any changed bit of message, signature or key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from orderflow.audit.verify_bundle import ed25519_verify, ed25519_verify_pure

    rfc_key = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    rfc_sig = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555f"
        "b8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    assert ed25519_verify_pure(rfc_key, b"", rfc_sig)
    for n in range(3):
        key = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        message = f"orderflow-anchor/1:{n:064x}".encode()
        signature = key.sign(message)
        assert ed25519_verify_pure(public, message, signature)
        assert ed25519_verify(public, message, signature)
        flipped = bytes([signature[0] ^ 1]) + signature[1:]
        for args in (
            (public, message + b"x", signature),
            (public, message, flipped),
            (rfc_key, message, signature),
        ):
            assert not ed25519_verify_pure(*args) and not ed25519_verify(*args)
