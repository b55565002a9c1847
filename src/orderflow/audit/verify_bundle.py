"""Check an order's hash-chained history offline: `python verify_bundle.py bundle.json`.

With the operator's anchor public key: `python verify_bundle.py bundle.json --public-key
anchor-signing.pub` also checks the anchor's Ed25519 signature.

Standard library only, on purpose: copy this one file next to a dispute bundle and anyone (the
customer, the card scheme, a court's expert) can check it without orderflow installed. orderflow
itself uses the same functions, so the two can never disagree about what a valid chain is.

What is checked:
- every entry's SHA-256 over its canonical JSON (sorted keys, no spaces, UTF-8) matches its hash:
  a changed field is found ("altered"), and so is a changed position ("renumbered");
- every entry carries the hash of the entry before it, and the numbers run without gaps: a
  deleted entry ("missing"), an inserted one ("inserted") and a reordering ("reordered") break it;
- the last entry is the order's head as the bundle states it;
- if the bundle carries an anchor: the anchor's own hash, the Merkle proof from the order's
  anchored head to the anchor's root, and that the chain still contains that anchored head: a
  chain whose latest entries were removed ("truncated") no longer does. The anchor's hash can be
  compared with the copy published outside the database (`anchors.jsonl`);
- the anchor's Ed25519 signature (over "orderflow-anchor/1:" + its hash), made with a private
  key kept outside the database: someone who can write the database can recompute every hash,
  but not sign. Given `--public-key`, an unsigned anchor or one signed by another key fails;
  without it, a signed anchor is checked against the public key the bundle carries (then
  compare that key's id with the one the operator published), and an unsigned anchor is
  reported as such. The signature check is pure Python (RFC 8032), or `cryptography`'s when
  it is installed.

Exit status 0 when the bundle verifies, 1 when it does not, 2 when it cannot be read.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from dataclasses import dataclass
from typing import Any

BUNDLE_FORMAT = "orderflow-dispute-bundle/1"
GENESIS = "0" * 64
RENUMBER_SEARCH = 64  # how far from its number an entry is looked for when renumbered


def canonical(value: Any) -> bytes:
    """The one byte form that is hashed: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry_content(entry: dict[str, Any], *, seq: int | None = None) -> dict[str, Any]:
    """What an entry's hash covers (`at` as ISO 8601 with microseconds and offset)."""
    return {
        "order_id": entry["order_id"],
        "seq": entry["seq"] if seq is None else seq,
        "at": entry["at"],
        "actor": entry["actor"],
        "action": entry["action"],
        "from": entry["from"],
        "to": entry["to"],
        "details": entry["details"],
        "prev": entry["prev_hash"],
    }


def entry_hash(content: dict[str, Any]) -> str:
    return sha256(canonical(content))


@dataclass(frozen=True)
class Problem:
    """One finding: its kind, the entry it is about, and a sentence for people."""

    kind: str  # altered | renumbered | missing | inserted | reordered | broken_link | head | …
    seq: int | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "seq": self.seq, "message": self.message}


def _label(entry: dict[str, Any]) -> str:
    return f"entry {entry['seq']} ({entry['action']})"


def _written_as(entry: dict[str, Any]) -> int | None:
    """The number an altered entry had when written, if only its number was changed."""
    seq = int(entry["seq"])
    for candidate in range(max(1, seq - RENUMBER_SEARCH), seq + RENUMBER_SEARCH + 1):
        if candidate != seq and entry_hash(entry_content(entry, seq=candidate)) == entry["hash"]:
            return candidate
    return None


def check_chain(
    entries: list[dict[str, Any]], *, start_seq: int = 0, start_hash: str = GENESIS
) -> list[Problem]:
    """Check entries (sorted by seq) that continue a chain from (start_seq, start_hash)."""
    problems: list[Problem] = []
    position = {e["hash"]: i for i, e in enumerate(entries)}
    referenced = {e["prev_hash"] for e in entries}
    prev_hash, prev_seq, prev_reordered, reorder_seen = start_hash, start_seq, False, False
    for i, e in enumerate(entries):
        seq = int(e["seq"])
        reordered = False
        if entry_hash(entry_content(e)) != e["hash"]:
            was = _written_as(e)
            if was is not None:
                problems.append(
                    Problem(
                        "renumbered",
                        seq,
                        f"{_label(e)} was entry {was} when it was written: it has been renumbered",
                    )
                )
            else:
                problems.append(
                    Problem(
                        "altered",
                        seq,
                        f"{_label(e)} was altered after it was written: "
                        "its content no longer matches its hash",
                    )
                )
        gap = seq > prev_seq + 1
        if gap:
            missing = (
                f"entry {prev_seq + 1} is"
                if seq == prev_seq + 2
                else f"entries {prev_seq + 1} to {seq - 1} are"
            )
            problems.append(
                Problem(
                    "missing",
                    prev_seq + 1,
                    f"{missing} missing (deleted): entry {seq} follows entry {prev_seq}",
                )
            )
        if e["prev_hash"] != prev_hash:
            before_previous = entries[i - 2]["hash"] if i >= 2 else start_hash
            later = position.get(e["prev_hash"])
            if later is not None and later > i:
                reordered = reorder_seen = True
                problems.append(
                    Problem(
                        "reordered",
                        seq,
                        f"{_label(e)} was written after {_label(entries[later])} but now comes "
                        "before it: the history was reordered",
                    )
                )
            elif (
                i >= 1
                and e["prev_hash"] == before_previous
                and entries[i - 1]["hash"] not in referenced
            ):
                inserted = entries[i - 1]
                problems.append(
                    Problem(
                        "inserted",
                        int(inserted["seq"]),
                        f"{_label(inserted)} was inserted: entry {seq} was written directly "
                        f"after the entry before it",
                    )
                )
            elif not gap and not prev_reordered and not (reorder_seen and later is not None):
                problems.append(
                    Problem(
                        "broken_link",
                        seq,
                        f"{_label(e)} does not carry the hash of entry {prev_seq}: "
                        "the link between them is broken",
                    )
                )
        prev_hash, prev_seq, prev_reordered = e["hash"], seq, reordered
    return problems


# --- anchors: a Merkle root over every order's head, chained to the previous anchor ---------


def merkle_leaf(order_id: int, seq: int, head: str) -> str:
    return sha256(b"\x00" + canonical([order_id, seq, head]))


def _node(left: str, right: str) -> str:
    return sha256(b"\x01" + bytes.fromhex(left) + bytes.fromhex(right))


def merkle_root(leaves: list[str]) -> str:
    """Pairwise up the levels; an odd last node is carried up unchanged."""
    if not leaves:
        return sha256(b"")
    level = leaves
    while len(level) > 1:
        nxt = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def merkle_proof(leaves: list[str], index: int) -> list[list[str]]:
    """The siblings from leaf `index` up to the root: [["L" or "R", hash], …]."""
    proof: list[list[str]] = []
    level = leaves
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(["L" if sibling < index else "R", level[sibling]])
        nxt = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level, index = nxt, index // 2
    return proof


def root_from_proof(leaf: str, proof: list[list[str]]) -> str:
    node = leaf
    for side, sibling in proof:
        node = _node(sibling, node) if side == "L" else _node(node, sibling)
    return node


def anchor_hash(anchor: dict[str, Any]) -> str:
    return sha256(
        canonical(
            {
                "id": anchor["id"],
                "at": anchor["at"],
                "orders": anchor["orders"],
                "root": anchor["root"],
                "prev": anchor["prev_hash"],
            }
        )
    )


def check_anchored(entries: list[dict[str, Any]], proof: dict[str, Any]) -> list[Problem]:
    """The anchor is intact, proves the order's head then, and the chain still holds that head."""
    anchor, leaf = proof["anchor"], proof["leaf"]
    name = f"anchor #{anchor['id']} of {anchor['at']}"
    if anchor_hash(anchor) != anchor["hash"]:
        return [Problem("anchor", None, f"{name} was altered: its content does not match its hash")]
    computed = merkle_leaf(leaf["order_id"], leaf["seq"], leaf["hash"])
    # Without a proof (orderflow's own check) the root is checked once for all orders instead.
    if (
        proof.get("proof") is not None
        and root_from_proof(computed, proof["proof"]) != anchor["root"]
    ):
        return [
            Problem(
                "anchor",
                leaf["seq"],
                f"the anchored head (entry {leaf['seq']}) is not under the root of {name}",
            )
        ]
    by_seq = {int(e["seq"]): e for e in entries}
    last = max(by_seq, default=0)
    anchored = by_seq.get(int(leaf["seq"]))
    if anchored is not None and anchored["hash"] == leaf["hash"]:
        return []
    if last < int(leaf["seq"]):
        removed = (
            f"entry {last + 1} was"
            if last + 1 == leaf["seq"]
            else f"entries {last + 1} to {leaf['seq']} were"
        )
        return [
            Problem(
                "truncated",
                last + 1,
                f"the chain ends at entry {last}, but {name} saw entry {leaf['seq']}: "
                f"{removed} removed (truncated tail)",
            )
        ]
    return [
        Problem(
            "anchor",
            int(leaf["seq"]),
            f"entry {leaf['seq']} is not the one {name} saw: the chain was rewritten",
        )
    ]


# --- anchor signatures: Ed25519 over the anchor's hash ---------------------------------------

SIGNATURE_CONTEXT = b"orderflow-anchor/1:"
_SPKI_ED25519 = bytes.fromhex("302a300506032b6570032100")  # DER prefix of an Ed25519 public key


def signed_message(anchor_hash_hex: str) -> bytes:
    """What an anchor's signature signs: a context string, then the anchor's hash (hex)."""
    return SIGNATURE_CONTEXT + anchor_hash_hex.encode()


def key_id(public_key: bytes) -> str:
    """A short name of a public key: the first 16 hex digits of its SHA-256."""
    return sha256(public_key)[:16]


def public_key_from_pem(text: str) -> bytes:
    """The 32 raw bytes of an Ed25519 public key in PEM (`-----BEGIN PUBLIC KEY-----`)."""
    lines = [line.strip() for line in text.strip().splitlines()]
    if (
        not lines
        or lines[0] != "-----BEGIN PUBLIC KEY-----"
        or "-----END PUBLIC KEY-----" not in lines
    ):
        raise ValueError("not a PEM public key")
    body = "".join(lines[1 : lines.index("-----END PUBLIC KEY-----")])
    der = base64.b64decode(body, validate=True)
    if len(der) != 44 or not der.startswith(_SPKI_ED25519):
        raise ValueError("not an Ed25519 public key")
    return der[len(_SPKI_ED25519) :]


# RFC 8032, section 6 (the reference verification, cofactorless like OpenSSL's).
_P = 2**255 - 19
_Q = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
Point = tuple[int, int, int, int]


def _add(a: Point, b: Point) -> Point:
    x = (a[1] - a[0]) * (b[1] - b[0]) % _P
    y = (a[1] + a[0]) * (b[1] + b[0]) % _P
    c = 2 * a[3] * b[3] * _D % _P
    d = 2 * a[2] * b[2] % _P
    e, f, g, h = y - x, d - c, d + c, y + x
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _mul(s: int, point: Point) -> Point:
    result: Point = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            result = _add(result, point)
        point = _add(point, point)
        s >>= 1
    return result


def _same(a: Point, b: Point) -> bool:
    return (a[0] * b[2] - b[0] * a[2]) % _P == 0 and (a[1] * b[2] - b[1] * a[2]) % _P == 0


def _recover_x(y: int, sign: int) -> int | None:
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P)
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P != 0:
        return None
    return _P - x if (x & 1) != sign else x


def _decompress(data: bytes) -> Point | None:
    y = int.from_bytes(data, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % _P)


_GY = 4 * pow(5, _P - 2, _P) % _P
_GX = _recover_x(_GY, 0) or 0
_G: Point = (_GX, _GY, 1, _GX * _GY % _P)


def ed25519_verify_pure(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Ed25519 verification in pure Python (slow: a few milliseconds; fine for a bundle)."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    a, r = _decompress(public_key), _decompress(signature[:32])
    if a is None or r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _Q:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public_key + message).digest(), "little")
    return _same(_mul(s, _G), _add(r, _mul(h % _Q, a)))


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Ed25519 verification: `cryptography`'s when installed (fast), else pure Python."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:
        return ed25519_verify_pure(public_key, message, signature)
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def check_signature(anchor: dict[str, Any], public_key: bytes) -> Problem | None:
    """None when `public_key` signed this anchor (as it is); else what is wrong with it: kind
    `unsigned` (no signature) or `signature` (another key, or a signature that does not verify:
    the anchor was forged or altered by someone without the private key)."""
    name = f"anchor #{anchor['id']}"
    signature = anchor.get("signature")
    if not signature:
        return Problem("unsigned", None, f"{name} is not signed")
    expected = key_id(public_key)
    if anchor.get("key_id") != expected:
        return Problem(
            "signature",
            None,
            f"{name} is signed by key {anchor.get('key_id')}, not by the anchor key {expected}: "
            "it was forged",
        )
    try:
        raw = bytes.fromhex(str(signature))
    except ValueError:
        raw = b""
    if anchor_hash(anchor) != anchor["hash"] or not ed25519_verify(
        public_key, signed_message(anchor["hash"]), raw
    ):
        return Problem(
            "signature",
            None,
            f"{name}'s signature does not verify: the anchor was forged or altered",
        )
    return None


# --- the bundle ----------------------------------------------------------------------------


def bundle_public_key(bundle: dict[str, Any]) -> bytes | None:
    """The anchor public key the bundle carries (informative: an attacker could swap it)."""
    pem = (bundle.get("anchor") or {}).get("public_key")
    return public_key_from_pem(pem) if isinstance(pem, str) else None


def verify_bundle(bundle: dict[str, Any], public_key: bytes | None = None) -> list[Problem]:
    """Every problem found in a dispute bundle; an empty list means it verifies.

    With `public_key` (the operator's, obtained apart from the bundle), the anchor must be
    signed by it; without, a signed anchor is checked against the key the bundle carries."""
    if bundle.get("format") != BUNDLE_FORMAT:
        return [Problem("format", None, f"not a {BUNDLE_FORMAT} bundle")]
    chain = bundle["chain"]
    entries = sorted(chain["entries"], key=lambda e: int(e["seq"]))
    order_id = bundle["order"]["id"]
    problems = [
        Problem("foreign", int(e["seq"]), f"{_label(e)} belongs to order {e['order_id']}")
        for e in entries
        if e["order_id"] != order_id
    ]
    start = chain["start"]
    problems += check_chain(entries, start_seq=int(start["seq"]), start_hash=start["hash"])
    head = chain["head"]
    last = entries[-1] if entries else {"seq": start["seq"], "hash": start["hash"]}
    if int(head["seq"]) != int(last["seq"]) or head["hash"] != last["hash"]:
        problems.append(
            Problem(
                "head",
                int(head["seq"]),
                f"the bundle says the chain ends at entry {head['seq']}, "
                f"its entries end at entry {last['seq']}",
            )
        )
    if bundle.get("anchor"):
        if not isinstance(bundle["anchor"].get("proof"), list):
            problems.append(Problem("anchor", None, "the anchor carries no Merkle proof"))
        else:
            problems += check_anchored(entries, bundle["anchor"])
        anchor = bundle["anchor"]["anchor"]
        key = public_key or (bundle_public_key(bundle) if anchor.get("signature") else None)
        if key is not None:
            found = check_signature(anchor, key)
            if found is not None:
                problems.append(found)
    return problems


def main(argv: list[str]) -> int:
    args = argv[1:]
    key_path = None
    if len(args) == 3 and args[1] == "--public-key":
        key_path = args[2]
    elif len(args) != 1:
        print("usage: python verify_bundle.py BUNDLE.json [--public-key KEY.pub]", file=sys.stderr)
        return 2
    public_key = None
    if key_path is not None:
        try:
            with open(key_path, encoding="ascii") as f:
                public_key = public_key_from_pem(f.read())
        except (OSError, ValueError) as exc:
            print(f"cannot read the public key {key_path}: {exc}", file=sys.stderr)
            return 2
    try:
        with open(args[0], encoding="utf-8") as f:
            bundle = json.load(f)
        problems = verify_bundle(bundle, public_key)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"cannot read {args[0]}: {exc}", file=sys.stderr)
        return 2
    reference = bundle.get("order", {}).get("reference", "?")
    entries = len(bundle["chain"]["entries"])
    if problems:
        print(f"FAILED: the history of {reference} does not verify ({len(problems)} problems)")
        for p in problems:
            print(f"  - [{p.kind}] {p.message}")
        return 1
    anchor = bundle.get("anchor")
    anchored = (
        f"; its head as of anchor #{anchor['anchor']['id']} ({anchor['anchor']['at']}, "
        f"hash {anchor['anchor']['hash'][:16]}…) is still in it"
        if anchor
        else "; no anchor covers it yet"
    )
    signed = ""
    if anchor and anchor["anchor"].get("signature"):
        whose = (
            "the public key given"
            if public_key is not None
            else "the key the bundle carries (compare its id with the operator's published one)"
        )
        signed = f"; the anchor is signed by key {anchor['anchor']['key_id']}, {whose}"
    elif anchor:
        signed = (
            "; the anchor is UNSIGNED (it proves nothing against whoever can write the database)"
        )
    print(f"OK: the history of {reference} verifies: {entries} entries, unbroken{anchored}{signed}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
