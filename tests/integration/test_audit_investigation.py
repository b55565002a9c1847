"""Investigation in one call, and the dispute bundle that verifies offline without orderflow."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from orderflow.audit import anchors, bundle, signing
from orderflow.audit.verify_bundle import anchor_hash, entry_content, entry_hash, merkle_leaf
from orderflow.cli import main
from orderflow.db import Database
from tests.integration.test_audit_tamper import order_with_history
from tests.support.stack import Stack


def _verify_offline(
    bundle_file: Path, workdir: Path, *options: str
) -> subprocess.CompletedProcess[str]:
    """Run the copied verifier in isolation: no site-packages, so no orderflow to lean on
    (nor `cryptography`: signatures are checked by its pure-Python Ed25519)."""
    return subprocess.run(
        [sys.executable, "-I", "-S", "verify_bundle.py", bundle_file.name, *options],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_investigation_tells_the_whole_story_in_plain_language(stack: Stack) -> None:
    """A delivered order: summary, timeline sentences with money and ids, integrity, e-mails."""
    customer = stack.customer()
    stack.product("WIDGET", price=1299)
    order = stack.place(customer, [("WIDGET", 2)])
    stack.work_until_status(order["id"], "delivered")
    response = stack.api.get(f"/orders/{order['id']}/investigation")
    assert response.status_code == 200
    found = response.json()
    lines = [t["text"] for t in found["timeline"]]
    assert lines[0] == "order placed by admin:api: 2 x WIDGET, total £25.98"
    paid = next(t for t in found["timeline"] if t["action"] == "payment.succeeded")
    assert paid["text"].startswith("payment of £25.98 succeeded (Paydesk pay_")
    assert any(t.startswith("“shipped” e-mail sent to ada+") for t in lines)
    assert any(t.startswith("parcel booked with Bob's Post (shipment ") for t in lines)
    integrity = found["integrity"]
    assert (integrity["ok"], integrity["entries"], integrity["problems"]) == (True, len(lines), [])
    assert integrity["anchor_id"] is not None  # the workers' periodic anchoring ran
    assert found["summary"][0] == f"{order['reference']} is delivered."
    assert any(s.startswith("Charged £25.98 on ") for s in found["summary"])
    assert [p["kind"] for p in found["payments"]] == ["charge"]
    assert [m["kind"] for m in found["emails"]] == ["shipped"]
    assert {e["outcome"] for e in found["carrier_events"]} <= {"applied", "stale", "unmatched"}
    audit = stack.api.get(f"/orders/{order['id']}/audit").json()
    assert audit["verdict"]["ok"] and len(audit["entries"]) == len(lines)
    page = stack.api.get(f"/orders/{order['id']}/dispute-bundle", params={"format": "html"})
    assert page.status_code == 200 and order["reference"] in page.text
    assert stack.api.get("/orders/999999/investigation").status_code == 404


def test_cli_investigate_and_verify(stack: Stack) -> None:
    """`orderflow investigate REF` prints the story; `audit verify --order` says OK."""
    customer = stack.customer()
    stack.product("WIDGET", price=1299)
    order = stack.place(customer, [("WIDGET", 1)])
    stack.work_until_status(order["id"], "paid", "scheduled", "shipped", "delivered")
    env = {"ORDERFLOW_DATABASE_URL": stack.settings.database_url}
    runner = CliRunner()
    shown = runner.invoke(main, ["investigate", order["reference"]], env=env)
    assert shown.exit_code == 0, shown.output
    assert "payment of £12.99 succeeded (Paydesk pay_" in shown.output
    verified = runner.invoke(main, ["audit", "verify", "--order", order["reference"]], env=env)
    assert verified.exit_code == 0, verified.output
    assert verified.output.startswith(f"OK {order['reference']}: ")
    missing = runner.invoke(main, ["investigate", "ORD-999999"], env=env)
    assert missing.exit_code != 0 and "no order ORD-999999" in missing.output
    for odd in ("²", "9" * 30):  # a digit that is not ASCII, an id no row can have
        refused = runner.invoke(main, ["investigate", odd], env=env)
        assert refused.exit_code != 0 and f"no order {odd}" in refused.output, refused.output
        assert "Traceback" not in refused.output


def _bundle(db: Database, order_id: int, directory: Path, public_key: bytes | None = None) -> Path:
    with db.read() as session:
        data = bundle.build(session, order_id, public_key=public_key)
    json_file, html_file, _ = bundle.write(data, directory)
    assert "The hash chain" in html_file.read_text()
    return json_file


def _rewrite(path: Path, change: Any) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_dispute_bundle_verifies_offline_and_tampering_with_it_does_not(
    db: Database, tmp_path: Path
) -> None:
    """The copied verifier (stdlib only) accepts the bundle, and names each kind of tampering."""
    order_id = order_with_history(db)
    anchors.anchor_now(db, tmp_path / "anchors")
    bundle_file = _bundle(db, order_id, tmp_path / "out")
    offline = tmp_path / "offline"
    offline.mkdir()
    shutil.copy(tmp_path / "out" / "verify_bundle.py", offline)
    shutil.copy(bundle_file, offline)
    copy = offline / bundle_file.name
    ok = _verify_offline(copy, offline)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK: the history of ORD-" in ok.stdout and "anchor #1" in ok.stdout

    def alter(data: dict[str, Any]) -> None:
        data["chain"]["entries"][2]["actor"] = "admin:someone-else"

    def truncate(data: dict[str, Any]) -> None:
        entries = data["chain"]["entries"]
        del entries[4:]
        data["chain"]["head"] = {"seq": entries[-1]["seq"], "hash": entries[-1]["hash"]}

    def drop(data: dict[str, Any]) -> None:
        del data["chain"]["entries"][1]

    cases = [
        (alter, "[altered] entry 3 (test.step3) was altered after it was written"),
        (truncate, "[truncated] the chain ends at entry 4, but anchor #1 of "),
        (drop, "[missing] entry 2 is missing (deleted): entry 3 follows entry 1"),
    ]
    for change, expected in cases:
        shutil.copy(bundle_file, copy)
        _rewrite(copy, change)
        failed = _verify_offline(copy, offline)
        assert failed.returncode == 1, failed.stdout
        assert expected in failed.stdout


def test_the_offline_verifier_checks_the_anchor_signature_with_the_public_key(
    db: Database, tmp_path: Path
) -> None:
    """With the operator's public key the standalone verifier accepts a signed anchor and
    refuses a forged one (hash recomputed, signature kept) or an unsigned one."""
    private, public, key_id = signing.keygen(tmp_path / "keys")
    signer = signing.load_signer(private)
    order_id = order_with_history(db)
    anchors.anchor_now(db, None, signer)
    bundle_file = _bundle(db, order_id, tmp_path / "out", signer.public_key)
    offline = tmp_path / "offline"
    offline.mkdir()
    shutil.copy(tmp_path / "out" / "verify_bundle.py", offline)
    shutil.copy(public, offline)
    copy = offline / bundle_file.name
    shutil.copy(bundle_file, copy)
    ok = _verify_offline(copy, offline, "--public-key", public.name)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"the anchor is signed by key {key_id}, the public key given" in ok.stdout
    carried = _verify_offline(copy, offline)  # no key given: the bundle's own is used
    assert carried.returncode == 0 and "the key the bundle carries" in carried.stdout

    def forge(data: dict[str, Any]) -> None:  # the last entry rewritten, re-anchored to match
        last = data["chain"]["entries"][-1]
        last["details"] = {"n": 600}
        last["hash"] = entry_hash(entry_content(last))
        head = data["chain"]["head"] = {"seq": last["seq"], "hash": last["hash"]}
        anchor = data["anchor"]["anchor"]
        data["anchor"]["proof"] = []
        data["anchor"]["leaf"] = {"order_id": order_id, "seq": head["seq"], "hash": head["hash"]}
        anchor["orders"] = 1
        anchor["root"] = merkle_leaf(order_id, head["seq"], head["hash"])
        anchor["hash"] = anchor_hash(anchor)

    def strip(data: dict[str, Any]) -> None:
        data["anchor"]["anchor"]["signature"] = None

    cases = [
        (forge, "(1 problems)\n  - [signature] anchor #1's signature does not verify"),
        (strip, "[unsigned] anchor #1 is not signed"),
    ]
    for change, expected in cases:
        shutil.copy(bundle_file, copy)
        _rewrite(copy, change)
        failed = _verify_offline(copy, offline, "--public-key", public.name)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert expected in failed.stdout


def test_the_worker_signs_its_anchors(database_url: str, tmp_path: Path) -> None:
    """With ORDERFLOW_AUDIT_ANCHOR_KEY_FILE the worker's periodic anchors are signed by it;
    an unreadable key stops the worker from being built, with the setting named."""
    from sqlalchemy import select

    from orderflow.audit.models import AuditAnchor
    from orderflow.wiring import MissingSetting, build_steps
    from tests.support.stack import start_stack

    private, _, key_id = signing.keygen(tmp_path / "keys")
    with start_stack(
        database_url, audit_anchor_key_file=private, audit_anchor_seconds=0.2
    ) as stack:
        stack.product("WIDGET", stock=5)
        order = stack.place(stack.customer(), [("WIDGET", 1)])
        stack.work_until_status(order["id"], "delivered")

        def signed() -> list[AuditAnchor]:
            with stack.db.read() as session:
                return list(session.scalars(select(AuditAnchor)))

        stack.work_until(lambda: len(signed()) >= 2)
        assert {(a.key_id, bool(a.signature)) for a in signed()} == {(key_id, True)}
        with stack.db.read() as session:
            assert (
                anchors.verify_anchors(session, None, signing.load_signer(private).public_key) == []
            )
        broken = stack.settings.model_copy(update={"audit_anchor_key_file": tmp_path / "none"})
        with pytest.raises(MissingSetting, match="ORDERFLOW_AUDIT_ANCHOR_KEY_FILE"):
            build_steps(broken, stack.adapters, stack.db)
