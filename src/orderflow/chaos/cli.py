"""`orderflow chaos`: the chaos scenario as a command (see `orderflow.chaos.run`)."""

from __future__ import annotations

import json
import tempfile
from contextlib import ExitStack
from pathlib import Path

import click
from sqlalchemy.engine import make_url


def _absolute(database_url: str) -> str:
    """A relative SQLite path means relative to here, not to the processes' directory."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).is_absolute():
        return url.set(database=str(Path(url.database).resolve())).render_as_string(
            hide_password=False
        )
    return database_url


@click.command()
@click.option("--orders", default=150, show_default=True, type=click.IntRange(min=1))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--database-url",
    default=None,
    help="an empty database to run on (default: a fresh SQLite file in a temporary directory)",
)
@click.option(
    "--postgres",
    is_flag=True,
    help="create a throwaway PostgreSQL database (on 127.0.0.1:5432 as user postgres) and "
    "drop it afterwards",
)
@click.option(
    "--outage-seconds",
    default=8.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="length of each phase of the carrier outage: 503s, then hanging connections",
)
@click.option(
    "--kill-every",
    default=4.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="seconds between kill -9s of a random worker (±50%; 0: never)",
)
@click.option("--seed", default=1, show_default=True, type=int)
@click.option(
    "--recovery-timeout",
    default=None,
    type=click.FloatRange(min=1),
    help="how long to wait after the outage for every order to ship [120 + 0.2 s per order]",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="write the figures"
)
@click.option(
    "--keep-logs",
    type=click.Path(file_okay=False, path_type=Path),
    help="run in this directory and keep the processes' logs there",
)
def chaos(
    orders: int,
    workers: int,
    database_url: str | None,
    postgres: bool,
    outage_seconds: float,
    kill_every: float,
    seed: int,
    recovery_timeout: float | None,
    json_path: Path | None,
    keep_logs: Path | None,
) -> None:
    """Real processes under every fault at once; exits 1 if any promise was broken.

    Starts the simulators, a mail sink, `serve` and WORKERS workers; places ORDERS orders; takes
    Bob's Post down (503, then hanging connections) with ambiguous failures on both gateways,
    duplicated, lost and shuffled webhooks, 429s and a kill -9 of a random worker every few
    seconds; then counts lost orders, double charges, double bookings, double "shipped"
    e-mails and backward status moves, and prints them with the recovery time and the drain
    rate after the outage (bookings/s as a fraction of ORDERFLOW_BOBS_POST_RATE_LIMIT).
    """
    # Imported here: `orderflow worker` and `serve` start without loading any of this.
    from orderflow.chaos.cluster import ClusterError
    from orderflow.chaos.run import ChaosOptions, run, throwaway_postgres

    if postgres and database_url:
        raise click.UsageError("--postgres and --database-url exclude each other")
    with ExitStack() as stack:
        if keep_logs is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chaos-")))
        else:
            directory = keep_logs.resolve()
        if postgres:
            database_url = stack.enter_context(throwaway_postgres())
        options = ChaosOptions(
            orders=orders,
            workers=workers,
            database_url=_absolute(database_url) if database_url else None,
            outage_seconds=outage_seconds,
            kill_every=kill_every,
            seed=seed,
            recovery_timeout=recovery_timeout,
        )
        try:
            report = run(options, directory, say=lambda line: click.echo(line, err=True))
        except ClusterError as exc:
            raise click.ClickException(f"the chaos cluster failed: {exc}") from None
        click.echo(report.summary())
        if json_path is not None:
            json_path.write_text(json.dumps(report.as_json(), indent=2) + "\n")
            click.echo(f"figures written to {json_path}")
        if not report.ok:
            where = "kept" if keep_logs else "deleted on exit; keep them with --keep-logs DIR"
            click.echo(f"\nthe end of every log ({where}):\n{report.tails}", err=True)
    if not report.ok:
        raise SystemExit(1)
