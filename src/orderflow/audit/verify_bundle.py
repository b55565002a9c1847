"""Check an order's hash-chained history offline: `python verify_bundle.py bundle.json`.

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
  compared with the copy published outside the database (`anchors.jsonl`).

Exit status 0 when the bundle verifies, 1 when it does not, 2 when it cannot be read.
"""

from __future__ import annotations

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


# --- the bundle ----------------------------------------------------------------------------


def verify_bundle(bundle: dict[str, Any]) -> list[Problem]:
    """Every problem found in a dispute bundle; an empty list means it verifies."""
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
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python verify_bundle.py BUNDLE.json", file=sys.stderr)
        return 2
    try:
        with open(argv[1], encoding="utf-8") as f:
            bundle = json.load(f)
        problems = verify_bundle(bundle)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"cannot read {argv[1]}: {exc}", file=sys.stderr)
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
    print(f"OK: the history of {reference} verifies: {entries} entries, unbroken{anchored}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
