"""The `orderflow` command: demo, serve, worker, migrate, sim, bench, users, tokens…"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from orderflow import heap, logs, redaction
from orderflow.audit.cli import audit_group, investigate
from orderflow.bench.cli import bench
from orderflow.chaos.cli import chaos
from orderflow.config import Settings
from orderflow.deadletters.cli import dead_letters
from orderflow.people.cli import proposals, tokens, users

F = TypeVar("F", bound=Callable[..., Any])


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"ORDERFLOW_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            if e["loc"]
            else e["msg"]
            for e in exc.errors()
        )
        raise click.ClickException(redaction.redact(f"invalid configuration: {problems}")) from None


def _friendly(func: F) -> F:
    """Known failures become one clear line and a non-zero exit, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from sqlalchemy.exc import OperationalError

        from orderflow.migrate import SchemaOutdated
        from orderflow.wiring import MissingSetting

        try:
            return func(*args, **kwargs)
        except (SchemaOutdated, MissingSetting) as exc:
            raise click.ClickException(redaction.redact(str(exc))) from None
        except OperationalError as exc:
            message = f"cannot reach the database: {exc.orig}"
            raise click.ClickException(redaction.redact(message)) from None

    return wrapper  # type: ignore[return-value]


@click.group()
@click.version_option(package_name="orderflow")
@click.pass_context
def main(ctx: click.Context) -> None:
    """orderflow: fault-tolerant order fulfilment."""
    redaction.install()  # no secret in any log record or traceback, whatever the command
    # Operator commands open the database lazily, with the schema check of serve/worker.
    ctx.obj = {"open_db": _friendly(lambda: _open_database(_settings(), False, pool_size=2))}


main.add_command(dead_letters)
main.add_command(chaos)
main.add_command(audit_group)
main.add_command(investigate)
main.add_command(bench)
main.add_command(users)
main.add_command(tokens)
main.add_command(proposals)


@main.command()
@click.option(
    "--new",
    "new_revision",
    metavar="MESSAGE",
    hidden=True,
    help="developers: autogenerate a migration from the models",
)
@_friendly
def migrate(new_revision: str | None) -> None:
    """Create or upgrade the database schema."""
    from orderflow.db import Database
    from orderflow.migrate import current_revision, head_revision, make_revision, upgrade

    db = Database(_settings().database_url, pool_size=0)
    if new_revision:
        make_revision(db.engine, new_revision)
        return
    before = current_revision(db.engine)
    upgrade(db.engine)
    click.echo(f"schema: {before or 'empty'} -> {head_revision()}")


def _open_database(
    settings: Settings, migrate_first: bool, pool_size: int = 10, *, service: bool = False
) -> Any:
    from orderflow.db import Database
    from orderflow.migrate import require_current, upgrade

    db = Database(settings.database_url, pool_size=pool_size)
    if migrate_first:
        upgrade(db.engine)
    require_current(db.engine)
    if service:
        from orderflow.privileges import runs_as_owner

        owner = runs_as_owner(db.engine)
        if owner is not None:
            import structlog

            structlog.get_logger("orderflow.db").warning(
                "db.runs_as_owner",
                role=owner,
                risk="the service owns its tables: it could TRUNCATE or DROP the history",
                fix="orderflow db grant --role orderflow_app (see docs/security.md)",
            )
    return db


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--migrate", "migrate_first", is_flag=True, help="upgrade the schema first")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="API processes sharing the port (one per core serves fastest)",
)
@_friendly
def serve(host: str, port: int, migrate_first: bool, workers: int) -> None:
    """The HTTP API, the console and the carrier webhook endpoint."""
    import uvicorn

    from orderflow.serving import serve_processes
    from orderflow.web.asgi import app_from_environment

    logs.configure(json=True)
    settings = _settings()
    if not settings.admin_token:
        raise click.ClickException("ORDERFLOW_ADMIN_TOKEN must be set for `orderflow serve`")
    if not settings.bobs_post_webhook_secret:
        raise click.ClickException(
            "ORDERFLOW_BOBS_POST_WEBHOOK_SECRET must be set: carrier webhooks are verified with it"
        )
    _open_database(settings, migrate_first, pool_size=0, service=True).dispose()  # once, here
    if workers > 1:
        if port == 0:
            raise click.ClickException("--workers needs a fixed --port")
        sys.exit(serve_processes("orderflow.web.asgi:app_from_environment", host, port, workers))
    uvicorn.run(app_from_environment(), host=host, port=port, log_level="warning", access_log=False)


@main.command()
@click.option("--migrate", "migrate_first", is_flag=True, help="upgrade the schema first")
@click.option("--name", default=None, help="worker name in logs and leases")
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="serve this worker's Prometheus metrics on 127.0.0.1:PORT",
)
@_friendly
def worker(migrate_first: bool, name: str | None, metrics_port: int | None) -> None:
    """The workers: claim due work, call the outside world, record what happened."""
    from orderflow.wiring import build_adapters, build_worker

    logs.configure(json=True)
    settings = _settings()
    db = _open_database(settings, migrate_first, pool_size=4, service=True)
    adapters = build_adapters(settings)
    if metrics_port is not None:
        from prometheus_client import start_http_server

        from orderflow.observability.metrics import registry_for

        start_http_server(metrics_port, addr="127.0.0.1", registry=registry_for(None))
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        click.echo(f"received {signal.Signals(signum).name}: finishing the batch in hand", err=True)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker = build_worker(settings, db, adapters, name)
    heap.settle()
    worker.run(stop)
    adapters.close()
    db.dispose()


@main.command()
@click.option("--migrate", "migrate_first", is_flag=True, help="upgrade the schema first")
@_friendly
def intake(migrate_first: bool) -> None:
    """Consume orders from RabbitMQ (ORDERFLOW_INTAKE_URL, ORDERFLOW_INTAKE_QUEUE)."""
    from orderflow.intake.consumer import IntakeConsumer
    from orderflow.wiring import pressure_gauge

    logs.configure(json=True)
    settings = _settings()
    url = settings.intake_broker_url
    if not url:
        raise click.ClickException("ORDERFLOW_INTAKE_URL (or ORDERFLOW_BROKER_URL) must be set")
    db = _open_database(settings, migrate_first, pool_size=2)
    consumer = IntakeConsumer(
        db,
        url,
        settings.intake_queue,
        prefetch=settings.intake_prefetch,
        group_size=settings.intake_group_size,
        group_seconds=settings.intake_group_seconds,
        transaction_seconds=settings.intake_transaction_seconds,
        pressure=pressure_gauge(settings, db),
    )
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        click.echo(f"received {signal.Signals(signum).name}: settling the group in hand", err=True)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    consumer.run(stop)
    db.dispose()


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--progress-seconds",
    default=4.0,
    show_default=True,
    help="how fast simulated parcels move from one carrier status to the next",
)
@_friendly
def demo(host: str, port: int, progress_seconds: float) -> None:
    """Everything in one process on SQLite: API, console, workers, simulators, mail sink."""
    from orderflow import demo as demo_mode

    logs.configure(json=False, level="WARNING")
    demo_mode.run(_settings(), host=host, port=port, progress_seconds=progress_seconds)


@main.group("db")
def db_group() -> None:
    """Database roles: least privilege for the service (PostgreSQL)."""


@db_group.command("grant")
@click.option("--role", required=True, help="the service's role, e.g. orderflow_app")
@click.option(
    "--password-env",
    metavar="VAR",
    default=None,
    help="set the role's password from this environment variable (never on the command line)",
)
@click.option("--create/--no-create", default=True, show_default=True, help="create the role")
@click.option("--sql", "print_sql", is_flag=True, help="print the statements, run nothing")
@_friendly
def db_grant(role: str, password_env: str | None, create: bool, print_sql: bool) -> None:
    """Give ROLE exactly what serve, worker and intake need; run as the tables' owner.

    Read and write the working tables, append to the history (no UPDATE, DELETE or
    TRUNCATE), no DDL. Run it again after every `orderflow migrate`."""
    import os

    from orderflow.db import Database
    from orderflow.privileges import PrivilegeError, grant, plan

    password = None
    if password_env:
        password = os.environ.get(password_env)
        if not password:
            raise click.ClickException(f"{password_env} is not set")
        redaction.remember(password)
    db = Database(_settings().database_url, pool_size=0)
    try:
        if print_sql:
            with db.engine.connect() as connection:
                statements = plan(connection, role, password=None, create=create).statements
            click.echo(";\n".join(statements) + ";")
            return
        done = grant(db.engine, role, password=password, create=create)
    except PrivilegeError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        db.dispose()
    click.echo(
        f"role {done.role}: reads and writes the working tables, appends to the history "
        f"(no UPDATE, DELETE or TRUNCATE), no DDL ({len(done.statements)} statements); "
        f"run serve, worker and intake as {done.role}, migrations as the owner"
    )


@main.group()
def attempts() -> None:
    """Attempt records (the evidence of every try at every step)."""


@attempts.command("export")
@click.option(
    "--older-than-days", type=float, default=None, help="default: ORDERFLOW_ATTEMPT_RETENTION_DAYS"
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    required=True,
    help="the archive to write (gzip-compressed JSON lines)",
)
@click.option(
    "--remove/--keep",
    default=True,
    show_default=True,
    help="remove the archived records from the database once the file is written",
)
@click.pass_context
def attempts_export(
    ctx: click.Context, older_than_days: float | None, out: str, remove: bool
) -> None:
    """Archive attempt records past their retention."""
    from datetime import timedelta
    from pathlib import Path

    from orderflow.clock import now
    from orderflow.observability.attempts import export_attempts

    days = older_than_days if older_than_days is not None else _settings().attempt_retention_days
    count = export_attempts(
        ctx.obj["open_db"](), older_than=now() - timedelta(days=days), path=Path(out), remove=remove
    )
    click.echo(
        f"{count} attempt record(s) older than {days:g} days written to {out}"
        + (" and removed from the database" if remove and count else "")
    )


@main.group()
def sim() -> None:
    """Run a simulator of the outside world on its own."""


@sim.command("bobs-post")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8081, show_default=True, type=int)
@click.option("--api-key", envvar="ORDERFLOW_BOBS_POST_API_KEY", default="", show_default=True)
@click.option("--webhook-secret", envvar="ORDERFLOW_BOBS_POST_WEBHOOK_SECRET", default="")
@click.option("--webhook-url", default=None, help="where to POST signed webhooks")
@click.option("--progress-seconds", default=2.0, show_default=True, type=float)
@click.option("--seed", default=None, type=int)
@click.option(
    "--webhook-senders",
    default=32,
    show_default=True,
    type=click.IntRange(min=1),
    help="webhook requests in flight at most (the others wait in a queue)",
)
def sim_bobs_post(
    host: str,
    port: int,
    api_key: str,
    webhook_secret: str,
    webhook_url: str | None,
    progress_seconds: float,
    seed: int | None,
    webhook_senders: int,
) -> None:
    """Bob's Post (switches: PATCH /_sim/switches)."""
    from orderflow.simulators import bobs_post

    switches = bobs_post.BobsPostSwitches(
        progress_seconds=progress_seconds, webhook_url=webhook_url, seed=seed
    )
    bobs_post.run(
        host,
        port,
        api_key=api_key,
        webhook_secret=webhook_secret,
        switches=switches,
        webhook_senders=webhook_senders,
    )


@sim.command("paydesk")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8082, show_default=True, type=int)
@click.option("--api-key", envvar="ORDERFLOW_PAYDESK_API_KEY", default="")
@click.option("--seed", default=None, type=int)
def sim_paydesk(host: str, port: int, api_key: str, seed: int | None) -> None:
    """Paydesk (switches: PATCH /_sim/switches)."""
    from orderflow.simulators import paydesk

    paydesk.run(host, port, api_key=api_key, switches=paydesk.PaydeskSwitches(seed=seed))


@sim.command("mailsink")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--smtp-port", default=2525, show_default=True, type=int)
@click.option("--http-port", default=8025, show_default=True, type=int)
def sim_mailsink(host: str, smtp_port: int, http_port: int) -> None:
    """An SMTP server that keeps every message (GET /messages, GET /stats on the HTTP port)."""
    from orderflow.simulators import mailsink

    mailsink.run(host, smtp_port, http_port)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
