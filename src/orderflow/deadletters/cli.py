"""`orderflow dead-letters list | show | redrive | discard` — straight against the database."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from orderflow.db import Database
from orderflow.deadletters import queries, service
from orderflow.deadletters.queries import Filter
from orderflow.errors import DomainError
from orderflow.people import four_eyes
from orderflow.people.cli import cli_actor, cli_principal


def _actor() -> str:
    return cli_actor()


def _filter_options(func: Any) -> Any:
    for option in (
        click.option("--step", help="only this step (charge, book, track, notify, …)"),
        click.option("--cause", help="only this cause (as `list` prints it)"),
        click.option("--dependency", help="only work for paydesk, bobs_post or smtp"),
    ):
        func = option(func)
    return func


def _db(ctx: click.Context) -> Database:
    db: Database = ctx.obj["open_db"]()
    return db


@click.group("dead-letters")
@click.pass_context
def dead_letters(ctx: click.Context) -> None:
    """Work that needs a person: inspect, redrive, discard."""


@dead_letters.command("list")
@_filter_options
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def list_(
    ctx: click.Context, step: str | None, cause: str | None, dependency: str | None, as_json: bool
) -> None:
    """Dead letters grouped by cause, then each one."""
    flt = Filter(step=step, cause=cause, dependency=dependency)
    with _db(ctx).read() as session:
        tasks = queries.matching(session, flt)
        if as_json:
            click.echo(
                json.dumps(
                    {"groups": queries.groups(tasks), "data": [queries.summary(t) for t in tasks]},
                    indent=2,
                )
            )
            return
        if not tasks:
            click.echo("no dead letters")
            return
        for group in queries.groups(tasks):
            click.echo(f"{group['count']:>6}  {group['cause']}")
            click.echo(f"        oldest {group['oldest']}, newest {group['newest']}")
        click.echo("")
        for t in tasks:
            s = queries.summary(t)
            click.echo(
                f"#{s['id']:<8} {s['order_reference'] or '-':<11} {s['step']:<16} "
                f"{s['attempts']} attempt(s)  {s['last_error']}"
            )


@dead_letters.command()
@click.argument("task_id", type=int)
@click.pass_context
def show(ctx: click.Context, task_id: int) -> None:
    """One dead letter with every attempt."""
    with _db(ctx).read() as session:
        try:
            click.echo(json.dumps(queries.detail(session, task_id), indent=2))
        except DomainError as exc:
            raise click.ClickException(exc.message) from None


@dead_letters.command()
@click.argument("task_id", type=int, required=False)
@_filter_options
@click.option("--all", "everything", is_flag=True, help="every dead letter")
@click.option("--dry-run", is_flag=True, help="only say what would be redriven")
@click.option("--pace", default=1.0, show_default=True, help="seconds between batches of 100")
@click.option("--wait/--no-wait", default=True, help="follow a bulk redrive to its end")
@click.pass_context
def redrive(
    ctx: click.Context,
    task_id: int | None,
    step: str | None,
    cause: str | None,
    dependency: str | None,
    everything: bool,
    dry_run: bool,
    pace: float,
    wait: bool,
) -> None:
    """Send one dead letter (ID) or many (a filter, or --all) round again."""
    db = _db(ctx)
    try:
        if task_id is not None:
            with db.transaction() as session:
                service.redrive(session, task_id, actor=_actor())
            click.echo(f"dead letter {task_id} is queued again")
            return
        if not (everything or step or cause or dependency):
            raise click.UsageError("give a dead letter id, a filter, or --all")
        flt = Filter(step=step, cause=cause, dependency=dependency)
        if dry_run:
            with db.read() as session:
                preview = service.preview(session, flt)
            click.echo(f"would redrive {preview['would_redrive']} dead letter(s):")
            for group in preview["groups"]:
                click.echo(f"{group['count']:>6}  {group['cause']}")
            return
        with db.transaction() as session:
            if four_eyes.may_include_payment_work(flt):
                four_eyes.guard(session, cli_principal(), four_eyes.BULK_REDRIVE)
            redrive_id = service.start_bulk_redrive(session, flt, actor=_actor(), pace_seconds=pace)
            total = service.bulk_progress(session, redrive_id)["total"]
        click.echo(
            f"bulk redrive {redrive_id} of {total} dead letter(s) started "
            "(the workers carry it out)"
        )
        if wait:
            _follow(db, redrive_id, total)
    except DomainError as exc:
        raise click.ClickException(exc.message) from None


def _follow(db: Database, redrive_id: int, total: int) -> None:
    with click.progressbar(length=total, label="redriving") as bar:
        done = 0
        while True:
            with db.read() as session:
                progress = service.bulk_progress(session, redrive_id)
            bar.update(progress["redriven"] - done)
            done = progress["redriven"]
            if progress["status"] == "failed":
                raise click.ClickException(f"bulk redrive {redrive_id} failed; see its task")
            if progress["status"] == "finished":
                return
            time.sleep(0.5)


@dead_letters.command()
@click.argument("task_id", type=int)
@click.option("--reason", required=True, help="why the work is given up (kept in the history)")
@click.pass_context
def discard(ctx: click.Context, task_id: int, reason: str) -> None:
    """Give up on one dead letter: the order takes its failure path (refund, stock, e-mail)."""
    try:
        with _db(ctx).transaction() as session:
            four_eyes.guard(session, cli_principal(), four_eyes.DISCARD)
            service.discard(session, task_id, actor=_actor(), reason=reason)
    except DomainError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"dead letter {task_id} discarded")
