"""`orderflow audit verify|anchor|archive|bundle|verify-archive|keygen`, `orderflow investigate`."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from orderflow.config import Settings
from orderflow.db import Database


def _settings() -> Settings:
    from pydantic import ValidationError

    from orderflow.redaction import redact

    try:
        return Settings()
    except ValidationError as exc:  # no input values in it (hide_input_in_errors)
        raise click.ClickException(redact(f"invalid configuration: {exc}")) from None


@contextmanager
def _database(settings: Settings) -> Iterator[Database]:
    from sqlalchemy.exc import OperationalError

    from orderflow.errors import NotFound
    from orderflow.migrate import SchemaOutdated, require_current

    db = Database(settings.database_url, pool_size=0)
    try:
        require_current(db.engine)
        yield db
    except (SchemaOutdated, NotFound) as exc:
        raise click.ClickException(str(exc)) from None
    except OperationalError as exc:
        from orderflow.redaction import redact

        raise click.ClickException(redact(f"cannot reach the database: {exc.orig}")) from None
    finally:
        db.dispose()


def _public_key(settings: Settings, path: Path | None = None) -> bytes | None:
    """The anchor public key: `--public-key`, else the configured public or private key."""
    from orderflow.audit import signing

    try:
        if path is not None:
            return signing.load_public_key(path)
        return signing.public_key_for(
            settings.audit_anchor_public_key_file, settings.audit_anchor_key_file
        )
    except signing.AnchorKeyError as exc:
        raise click.ClickException(str(exc)) from None


def _print_problems(problems: list[Any]) -> None:
    for p in problems:
        click.echo(f"  - [{p.kind}] {p.message}")


@click.group("audit")
def audit_group() -> None:
    """The tamper-evident history: verify, anchor, archive, export dispute bundles."""


@audit_group.command("verify")
@click.option("--order", "ref", default=None, help="one order (ORD-000123 or its id)")
@click.option(
    "--public-key",
    "public_key_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="the anchor public key (default: ORDERFLOW_AUDIT_ANCHOR_PUBLIC_KEY_FILE, or the "
    "public half of ORDERFLOW_AUDIT_ANCHOR_KEY_FILE)",
)
def verify(ref: str | None, public_key_file: Path | None) -> None:
    """Verify hash chains, chain heads, anchors (signatures, the exported copy) and archives."""
    from sqlalchemy import select

    from orderflow.audit import anchors, archive, chain
    from orderflow.audit.investigation import resolve
    from orderflow.orders.models import Order, order_reference

    settings = _settings()
    public_key = _public_key(settings, public_key_file)
    failed = False
    with _database(settings) as db, db.read() as session:
        if ref is not None:
            order_ids = [resolve(session, ref)]
        else:
            order_ids = list(session.scalars(select(Order.id).order_by(Order.id)))
        entries = 0
        for order_id in order_ids:
            verdict = chain.verify_order(session, order_id, public_key)
            entries += verdict.entries
            if not verdict.ok:
                failed = True
                click.echo(f"FAILED {order_reference(order_id)}:")
                _print_problems(verdict.findings)
            elif ref is not None:
                anchored = f", anchored (#{verdict.anchor_id})" if verdict.anchor_id else ""
                click.echo(f"OK {order_reference(order_id)}: {verdict.entries} entries{anchored}")
        if ref is None:
            problems = anchors.verify_anchors(session, settings.audit_anchor_dir, public_key)
            if settings.audit_archive_dir is not None:
                problems += archive.verify_archives(session, settings.audit_archive_dir)
            if problems:
                failed = True
                click.echo("FAILED anchors/archives:")
                _print_problems(problems)
            if not failed:
                outside = (
                    f", anchors match {settings.audit_anchor_dir / anchors.ANCHOR_FILE}"
                    if settings.audit_anchor_dir
                    else " (ORDERFLOW_AUDIT_ANCHOR_DIR unset: anchors not compared with a copy)"
                )
                click.echo(f"OK: {len(order_ids)} orders, {entries} entries verified{outside}")
                click.echo(f"anchors: {anchors.signature_status(session, public_key)}")
    if failed:
        sys.exit(1)


@audit_group.command("anchor")
def anchor() -> None:
    """Anchor every chain head now (Merkle root, chained) and export it outside the database."""
    from orderflow.audit import anchors, signing

    settings = _settings()
    try:
        signer = signing.signer_for(settings.audit_anchor_key_file)
    except signing.AnchorKeyError as exc:
        raise click.ClickException(str(exc)) from None
    with _database(settings) as db:
        try:
            result = anchors.anchor_now(db, settings.audit_anchor_dir, signer)
        except anchors.AnchorRefused as exc:
            raise click.ClickException(str(exc)) from None
    a = result.anchor
    where = (
        settings.audit_anchor_dir / anchors.ANCHOR_FILE
        if settings.audit_anchor_dir
        else "nowhere (set ORDERFLOW_AUDIT_ANCHOR_DIR)"
    )
    signed = f"signed by key {a['key_id']}" if a["signature"] else "UNSIGNED (no anchor key)"
    click.echo(
        f"anchor #{a['id']}: {a['orders']} orders, {result.moved} heads moved, root {a['root']}, "
        f"hash {a['hash']}, {signed}; exported to {where}"
    )
    if result.refused:
        click.echo("heads NOT anchored (they went back since the last anchor):")
        _print_problems(result.refused)
        sys.exit(1)


@audit_group.command("archive")
@click.option("--older-than-days", type=float, default=None, help="default: settings")
@click.option("--out", "out", type=click.Path(path_type=Path), default=None)
@click.option("--max-orders", type=int, default=1000, show_default=True, help="per archive file")
def archive_command(older_than_days: float | None, out: Path | None, max_orders: int) -> None:
    """Move entries older than the retention age to compressed archives (then out of the table)."""
    from orderflow.audit import archive

    settings = _settings()
    directory = out or settings.audit_archive_dir
    if directory is None:
        raise click.ClickException("set ORDERFLOW_AUDIT_ARCHIVE_DIR or pass --out")
    days = older_than_days if older_than_days is not None else settings.audit_archive_after_days
    with _database(settings) as db:
        done = archive.archive_all(
            db, older_than=timedelta(days=days), directory=directory, max_orders=max_orders
        )
    for a in done:
        if a.orders:
            click.echo(f"{a.path}: {a.orders} orders, {a.entries} entries")
        for line in a.skipped:
            click.echo(f"  kept (does not verify): {line}")
    if not any(a.orders for a in done):
        click.echo(f"nothing older than {days:g} days to archive")


@audit_group.command("verify-archive")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
def verify_archive(path: Path) -> None:
    """Check an archive file on its own: every order's entries chain from their start."""
    from orderflow.audit import archive

    problems = archive.verify_file(path)
    if problems:
        click.echo(f"FAILED {path}:")
        _print_problems(problems)
        sys.exit(1)
    header, orders = archive.read_file(path)
    count = sum(len(o["entries"]) for o in orders)
    click.echo(f"OK {path}: archive #{header['archive_id']}, {len(orders)} orders, {count} entries")


@audit_group.command("bundle")
@click.argument("ref")
@click.option("--out", type=click.Path(path_type=Path), default=Path("."), show_default=True)
def bundle_command(ref: str, out: Path) -> None:
    """Export a dispute bundle: JSON + HTML + the standalone verifier."""
    from orderflow.audit import bundle
    from orderflow.audit.investigation import resolve

    settings = _settings()
    public_key = _public_key(settings)
    with _database(settings) as db, db.read() as session:
        data = bundle.build(
            session,
            resolve(session, ref),
            archive_dir=settings.audit_archive_dir,
            public_key=public_key,
        )
    for path in bundle.write(data, out):
        click.echo(str(path))


@audit_group.command("keygen")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="where to write anchor-signing.key (private, 0600) and anchor-signing.pub",
)
def keygen(out: Path) -> None:
    """Write a new Ed25519 key pair for signing anchors (never over existing files)."""
    from orderflow.audit import signing

    try:
        private, public, key_id = signing.keygen(out)
    except signing.AnchorKeyError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"anchor signing key {key_id}")
    click.echo(f"  private: {private}  (workers and `orderflow audit anchor` only; mode 0600)")
    click.echo(f"  public:  {public}  (publish it: verifying needs only this)")
    click.echo(f"export ORDERFLOW_AUDIT_ANCHOR_KEY_FILE={private}")


@click.command("investigate")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="the whole investigation as JSON")
def investigate(ref: str, as_json: bool) -> None:
    """Everything about one order: summary, timeline, integrity, failures, payments, e-mails."""
    from orderflow.audit.investigation import investigation, resolve

    settings = _settings()
    public_key = _public_key(settings)
    with _database(settings) as db, db.read() as session:
        found = investigation(session, resolve(session, ref), public_key)
    if as_json:
        click.echo(json.dumps(found, indent=2, ensure_ascii=False))
        return
    click.echo("\n".join(found["summary"]))
    click.echo("\nTimeline (UTC):")
    for t in found["timeline"]:
        click.echo(f"  {t['time']}  {t['text']}  [{t['actor']}]")
    if found["failures"]:
        click.echo("\nFailures:")
        for f in found["failures"]:
            dead = " — DEAD LETTER" if f["dead_letter"] else ""
            click.echo(f"  {f['step']}: {f['attempts']} attempts, {f['last_error']}{dead}")
    if found["carrier_events"]:
        click.echo("\nCarrier events:")
        for e in found["carrier_events"]:
            click.echo(
                f"  {e['occurred_at']}  {e['carrier_status']} ({e['source']} {e['event_id']}): "
                f"{e['outcome']}"
            )
