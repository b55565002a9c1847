"""`orderflow users | tokens | proposals`: people, their API tokens, four-eyes approvals.

These commands work straight against the database (whoever runs them can reach it), like
`orderflow dead-letters`. Proposing, approving and rejecting are done as a named user
(`--as NAME`, whose password is asked for), so that the second pair of eyes is a person.
"""

from __future__ import annotations

import getpass
import json
import sys
from typing import Any

import click

from orderflow.db import Database
from orderflow.errors import DomainError
from orderflow.orders.models import parse_order_id
from orderflow.people import four_eyes
from orderflow.people import service as people
from orderflow.people.roles import Principal, Role


def cli_actor() -> str:
    """The history's name for an operator at the command line: their OS user."""
    return f"cli:{getpass.getuser()}"


def cli_principal() -> Principal:
    return Principal(actor=cli_actor(), role=Role.ADMIN)


def _db(ctx: click.Context) -> Database:
    db: Database = ctx.obj["open_db"]()
    return db


def _password(prompt: str, from_stdin: bool, *, confirm: bool = False) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    value: str = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    return value


def _fail(exc: DomainError) -> click.ClickException:
    return click.ClickException(exc.message)


# --- users ------------------------------------------------------------------------------------


@click.group()
def users() -> None:
    """Named users of the API and the console: admin, support or viewer."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@click.pass_context
def users_add(ctx: click.Context, name: str, role: str, password_stdin: bool) -> None:
    """Add a user (asks for their password: at least 12 characters)."""
    password = _password(f"Password for {name}", password_stdin, confirm=True)
    try:
        with _db(ctx).transaction() as session:
            people.add_user(session, name, role, password, actor=cli_actor())
    except DomainError as exc:
        raise _fail(exc) from None
    click.echo(f"user {name} added ({role})")


@users.command("list")
@click.pass_context
def users_list(ctx: click.Context) -> None:
    """Every user, with their role and whether they are disabled."""
    with _db(ctx).read() as session:
        found = people.list_users(session)
    if not found:
        click.echo("no users (only the admin token ORDERFLOW_ADMIN_TOKEN works)")
    for u in found:
        state = f"disabled {u.disabled_at:%Y-%m-%d %H:%M}" if u.disabled_at else "active"
        click.echo(f"{u.name:<24} {u.role:<8} {state:<24} added by {u.created_by}")


@users.command("disable")
@click.argument("name")
@click.pass_context
def users_disable(ctx: click.Context, name: str) -> None:
    """Disable a user: their console sessions end and their API tokens stop, at once."""
    try:
        with _db(ctx).transaction() as session:
            people.disable_user(session, name)
    except DomainError as exc:
        raise _fail(exc) from None
    click.echo(f"user {name} disabled: sessions ended, tokens refused")


@users.command("enable")
@click.argument("name")
@click.pass_context
def users_enable(ctx: click.Context, name: str) -> None:
    """Enable a disabled user again (their unexpired, unrevoked tokens work again)."""
    try:
        with _db(ctx).transaction() as session:
            people.enable_user(session, name)
    except DomainError as exc:
        raise _fail(exc) from None
    click.echo(f"user {name} enabled")


@users.command("password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@click.pass_context
def users_password(ctx: click.Context, name: str, password_stdin: bool) -> None:
    """Set a user's password."""
    password = _password(f"New password for {name}", password_stdin, confirm=True)
    try:
        with _db(ctx).transaction() as session:
            people.set_password(session, name, password)
    except DomainError as exc:
        raise _fail(exc) from None
    click.echo(f"password of {name} changed")


# --- tokens -----------------------------------------------------------------------------------


@click.group()
def tokens() -> None:
    """Personal API tokens (bearer tokens acting as their user, with the user's role)."""


@tokens.command("create")
@click.argument("name")
@click.option("--expires", default="30d", show_default=True, help="lifetime: 12h, 30d, 2w…")
@click.option("--note", default=None, help="what the token is for")
@click.pass_context
def tokens_create(ctx: click.Context, name: str, expires: str, note: str | None) -> None:
    """Create a token for user NAME; it is printed once and only its hash is kept."""
    try:
        with _db(ctx).transaction() as session:
            new = people.create_token(session, name, people.parse_duration(expires), note)
    except DomainError as exc:
        raise _fail(exc) from None
    click.echo(f"token {new.id} for {name}, expires {new.expires_at:%Y-%m-%d %H:%M} UTC")
    click.echo("copy it now, it is not shown again:", err=True)
    click.echo(new.token)


@tokens.command("list")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tokens_list(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """Tokens (of NAME, or everyone's): never the token itself, only its first characters."""
    with _db(ctx).read() as session:
        rows = people.list_tokens(session, name)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for t in rows:
        click.echo(
            f"#{t['id']:<6} {t['user']:<20} {t['hint']:<14} {t['state']:<8} "
            f"expires {t['expires_at'][:16]}  last used {(t['last_used_at'] or 'never')[:16]}"
            + (f"  ({t['note']})" if t["note"] else "")
        )


@tokens.command("revoke")
@click.argument("token_id", type=int)
@click.pass_context
def tokens_revoke(ctx: click.Context, token_id: int) -> None:
    """Revoke a token (by the id `tokens list` shows): refused from the next request on."""
    try:
        with _db(ctx).transaction() as session:
            people.revoke_token(session, token_id)
    except DomainError as exc:
        raise _fail(exc) from None
    click.echo(f"token {token_id} revoked")


# --- four-eyes proposals ------------------------------------------------------------------------


def _as_user(db: Database, name: str, password_stdin: bool) -> Principal:
    password = _password(f"Password of {name}", password_stdin)
    with db.transaction() as session:
        who = people.authenticate(session, name, password)
    if who is None:
        raise click.ClickException(f"not a user of that name and password (or disabled): {name}")
    return who


def _as_option(func: Any) -> Any:
    func = click.option(
        "--password-stdin", is_flag=True, help="read the password from standard input"
    )(func)
    return click.option(
        "--as",
        "as_name",
        required=True,
        envvar="ORDERFLOW_USER",
        help="act as this user (asks for their password); env ORDERFLOW_USER",
    )(func)


def _show(p: dict[str, Any]) -> str:
    decided = f", {p['status']} by {p['decided_by']}" if p["decided_by"] else ""
    return (
        f"#{p['id']:<5} {p['status']:<8} {p['action']:<12} {json.dumps(p['params'])}  "
        f"proposed by {p['proposed_by']}{decided}: {p['reason']}"
    )


@click.group()
def proposals() -> None:
    """Four-eyes: refunds, re-sends, discards and bulk redrives of payment work need a second
    person."""


@proposals.command("list")
@click.option("--all", "everything", is_flag=True, help="decided ones too")
@click.pass_context
def proposals_list(ctx: click.Context, everything: bool) -> None:
    """Pending proposals (or all)."""
    with _db(ctx).read() as session:
        rows = four_eyes.listing(session, status=None if everything else four_eyes.PENDING)
    if not rows:
        click.echo("no proposals" if everything else "no pending proposals")
    for p in rows:
        click.echo(_show(p))


@proposals.group("propose")
def propose() -> None:
    """Propose a dangerous action; another admin approves it with `proposals approve`."""


def _propose(
    ctx: click.Context,
    as_name: str,
    password_stdin: bool,
    action: str,
    params: dict[str, Any],
    reason: str,
) -> None:
    db = _db(ctx)
    who = _as_user(db, as_name, password_stdin)
    try:
        with db.transaction() as session:
            p = four_eyes.view(four_eyes.propose(session, who, action, params, reason))
    except DomainError as exc:
        raise _fail(exc) from None
    click.echo(f"proposed: {_show(p)}")
    click.echo(f"another admin approves it with: orderflow proposals approve {p['id']} --as NAME")


@propose.command("refund")
@click.argument("order_id", type=int)
@click.option("--reason", required=True)
@_as_option
@click.pass_context
def propose_refund(
    ctx: click.Context, order_id: int, reason: str, as_name: str, password_stdin: bool
) -> None:
    """Cancel ORDER_ID (an order id) and refund its charge."""
    params = {"order_id": order_id}
    _propose(ctx, as_name, password_stdin, four_eyes.REFUND, params, reason)


@propose.command("resend")
@click.argument("order")
@click.option("--reason", required=True)
@_as_option
@click.pass_context
def propose_resend(
    ctx: click.Context, order: str, reason: str, as_name: str, password_stdin: bool
) -> None:
    """Re-send the lost or returned parcel of ORDER (an id or ORD-… reference): a replacement
    order with the same lines, not charged again."""
    order_id = parse_order_id(order)
    if order_id is None:
        raise click.ClickException(f"no order {order!r}: give its id or its ORD-… reference")
    params = {"order_id": order_id}
    _propose(ctx, as_name, password_stdin, four_eyes.RESEND, params, reason)


@propose.command("discard")
@click.argument("task_id", type=int)
@click.option("--reason", required=True)
@_as_option
@click.pass_context
def propose_discard(
    ctx: click.Context, task_id: int, reason: str, as_name: str, password_stdin: bool
) -> None:
    """Discard dead letter TASK_ID (the order takes its failure path)."""
    params = {"task_id": task_id}
    _propose(ctx, as_name, password_stdin, four_eyes.DISCARD, params, reason)


@propose.command("bulk-redrive")
@click.option("--step")
@click.option("--cause")
@click.option("--dependency")
@click.option("--pace", default=1.0, show_default=True, help="seconds between batches")
@click.option("--reason", required=True)
@_as_option
@click.pass_context
def propose_bulk_redrive(
    ctx: click.Context,
    step: str | None,
    cause: str | None,
    dependency: str | None,
    pace: float,
    reason: str,
    as_name: str,
    password_stdin: bool,
) -> None:
    """Redrive every dead letter matching the filter (none: all of them)."""
    params = {"step": step, "cause": cause, "dependency": dependency, "pace_seconds": pace}
    _propose(ctx, as_name, password_stdin, four_eyes.BULK_REDRIVE, params, reason)


@proposals.command("approve")
@click.argument("proposal_id", type=int)
@_as_option
@click.pass_context
def proposals_approve(
    ctx: click.Context, proposal_id: int, as_name: str, password_stdin: bool
) -> None:
    """Approve another person's proposal: the action runs now."""
    db = _db(ctx)
    who = _as_user(db, as_name, password_stdin)
    try:
        p = four_eyes.approve_and_run(db, who, proposal_id)
    except DomainError as exc:
        raise _fail(exc) from None
    click.echo(f"approved and done: {_show(p)}  {json.dumps(p['outcome'])}")


@proposals.command("reject")
@click.argument("proposal_id", type=int)
@click.option("--note", default="", help="why (kept with the proposal and in the history)")
@_as_option
@click.pass_context
def proposals_reject(
    ctx: click.Context, proposal_id: int, note: str, as_name: str, password_stdin: bool
) -> None:
    """Reject a proposal (or withdraw your own): nothing runs."""
    db = _db(ctx)
    who = _as_user(db, as_name, password_stdin)
    try:
        with db.transaction() as session:
            p = four_eyes.view(four_eyes.reject(session, who, proposal_id, note))
    except DomainError as exc:
        raise _fail(exc) from None
    click.echo(f"rejected: {_show(p)}")
