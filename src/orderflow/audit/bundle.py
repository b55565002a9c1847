"""The dispute bundle: an order's investigation plus its full hash chain and anchor proof.

Written as three files side by side: `<REF>.dispute.json` (the evidence), `<REF>.dispute.html`
(the same, readable by people), and `verify_bundle.py` (the standalone checker: Python standard
library only). `python verify_bundle.py ORD-000123.dispute.json` checks the chain offline.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jinja2
from sqlalchemy.orm import Session

from orderflow import __version__
from orderflow.audit import anchors, archive, chain, verify_bundle
from orderflow.audit.investigation import investigation
from orderflow.audit.verify_bundle import BUNDLE_FORMAT, GENESIS
from orderflow.clock import now

TEMPLATES = Path(__file__).parent / "templates"
VERIFIER = Path(verify_bundle.__file__)


def build(
    session: Session,
    order_id: int,
    *,
    archive_dir: Path | None = None,
    public_key: bytes | None = None,
) -> dict[str, Any]:
    """The bundle as a dict (JSON-ready); archived entries are included when their files are;
    with the anchor public key, its latest validly signed anchor (and the key, for reference)."""
    found = investigation(session, order_id, public_key)
    start = chain.chain_start(session, order_id)
    hot = [chain.as_dict(e) for e in chain.entries_of(session, order_id)]
    older = archive.archived_entries(session, order_id, archive_dir) if archive_dir else []
    if start.seq and older and int(older[-1]["seq"]) == start.seq:
        entries, first = older + hot, {"seq": 0, "hash": GENESIS}
    else:
        entries, first = hot, {"seq": start.seq, "hash": start.hash}
    last = entries[-1] if entries else first
    return {
        "format": BUNDLE_FORMAT,
        "generated_at": now().isoformat(timespec="seconds"),
        "generated_by": f"orderflow {__version__}",
        "how_to_verify": (
            "python verify_bundle.py THIS_FILE.json [--public-key anchor-signing.pub] — checks "
            "every entry's SHA-256 over its canonical JSON, the links between entries, the "
            "anchor's Merkle proof and its Ed25519 signature; compare the anchor hash with the "
            "published anchors.jsonl and the key id with the operator's published key"
        ),
        **found,
        "chain": {
            "start": first,
            "head": {"seq": last["seq"], "hash": last["hash"]},
            "entries": entries,
        },
        "anchor": anchors.proof_for(session, order_id, public_key),
    }


def render_html(bundle: dict[str, Any]) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("bundle.html").render(b=bundle)


def write(bundle: dict[str, Any], directory: Path) -> list[Path]:
    """Write the JSON, the HTML page and the verifier into `directory`; returns the paths."""
    import json

    directory.mkdir(parents=True, exist_ok=True)
    reference = bundle["order"]["reference"]
    data = directory / f"{reference}.dispute.json"
    page = directory / f"{reference}.dispute.html"
    verifier = directory / "verify_bundle.py"
    data.write_text(json.dumps(bundle, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    page.write_text(render_html(bundle), encoding="utf-8")
    shutil.copyfile(VERIFIER, verifier)
    return [data, page, verifier]
