"""`orderflow bench …`: measure a running deployment from the outside."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import click

from orderflow.bench import intake


@click.group()
def bench() -> None:
    """Benchmarks: intake against a running orderflow, or the whole lifecycle on its own."""


@bench.command("intake")
@click.option(
    "--via",
    type=click.Choice([*sorted(intake.VIAS), intake.QUEUE]),
    default="post",
    show_default=True,
    help="queue: publish to the intake queue, count what `orderflow intake` placed",
)
@click.option("--orders", type=click.IntRange(1), default=10_000, show_default=True)
@click.option("--clients", type=click.IntRange(1, 4096), default=64, show_default=True)
@click.option("--url", default="http://127.0.0.1:8000", show_default=True)
@click.option("--token", envvar="ORDERFLOW_ADMIN_TOKEN", required=True, help="admin bearer token")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 1000),
    default=100,
    show_default=True,
    help="orders per request (--via batch)",
)
@click.option(
    "--skus",
    type=click.IntRange(1),
    default=2,
    show_default=True,
    help="products the orders spread over (2: every order hits the same hot stock rows)",
)
@click.option(
    "--broker",
    envvar="ORDERFLOW_INTAKE_URL",
    default="amqp://guest:guest@127.0.0.1/",
    show_default=True,
    help="RabbitMQ the intake consumes (--via queue)",
)
@click.option(
    "--queue",
    envvar="ORDERFLOW_INTAKE_QUEUE",
    default="orderflow.orders",
    show_default=True,
    help="the intake's queue (--via queue)",
)
@click.option("--json", "as_json", is_flag=True, help="print the result as one JSON line")
def bench_intake(
    via: str,
    orders: int,
    clients: int,
    url: str,
    token: str,
    batch_size: int,
    skus: int,
    broker: str,
    queue: str,
    as_json: bool,
) -> None:
    """Send ORDERS orders from CLIENTS concurrent clients; report accepted/s and latency.

    Creates its own customer and products (plenty of stock) first. Every order carries its
    own Idempotency-Key; refusals (409, 429, 503…) are counted by status, never retried.
    With --via queue the orders are published to the intake queue (persistent, confirmed)
    and counted through the API as `orderflow intake` places them; latency is the confirm's.
    """
    target = intake.Target(url, token)
    with click.progressbar(length=orders, label=f"{via}: orders answered", file=None) as bar:
        seen = 0

        def progress(done: int) -> None:
            nonlocal seen
            bar.update(done - seen)
            seen = done

        if via == intake.QUEUE:
            sending = intake.run_queue(target, orders, broker, queue, skus=skus, progress=progress)
        else:
            sending = intake.run(
                target, via, orders, clients, batch_size=batch_size, skus=skus, progress=progress
            )
        report = asyncio.run(sending)
        progress(orders)
    click.echo(json.dumps(report.as_dict()) if as_json else report.table())


@bench.command("lifecycle")
@click.option("--orders", type=click.IntRange(1), default=1_000, show_default=True)
@click.option("--workers", type=click.IntRange(1, 32), default=2, show_default=True)
@click.option("--clients", type=click.IntRange(1, 256), default=16, show_default=True)
@click.option(
    "--database-url",
    help="an empty, migrated-or-not PostgreSQL database (default: a throwaway one on "
    "127.0.0.1:5432 as user postgres, dropped afterwards)",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0.1),
    help="place at most this many orders a second (a steady load; default: as fast as "
    "CLIENTS clients go)",
)
@click.option(
    "--default-settings",
    is_flag=True,
    help="run with the product's default knobs (default: the chaos cluster's fast ones)",
)
@click.option(
    "--burst",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="also place this many orders through POST /orders/batch at the start (bulk intake); "
    "latencies are then shown for the one-by-one orders and the burst apart",
)
@click.option("--json", "as_json", is_flag=True, help="print the result as one JSON line")
def bench_lifecycle(
    orders: int,
    workers: int,
    clients: int,
    database_url: str | None,
    rate: float | None,
    default_settings: bool,
    burst: int,
    as_json: bool,
) -> None:
    """ORDERS orders placed → paid → booked → shipped e-mail → delivered, and what each cost.

    Runs the simulators, a mail sink, `serve` and WORKERS workers as processes (no faults,
    rate limits out of the way), places the orders from CLIENTS clients while the workers
    run, waits until every one is delivered, and prints orders/s and CPU per order by process.
    """
    from orderflow.bench import lifecycle

    result = lifecycle.run(
        orders,
        workers,
        clients,
        database_url,
        rate=rate,
        default_settings=default_settings,
        burst=burst,
    )
    click.echo(json.dumps(dataclasses.asdict(result)) if as_json else result.table())
