"""`orderflow demo`: everything in one process on SQLite, with simulated outside world."""

from __future__ import annotations

import os
import secrets
import socket
import threading
from dataclasses import dataclass
from typing import Any

import click
import uvicorn
from sqlalchemy import func, select

from orderflow.catalog import service as catalog
from orderflow.catalog.models import Customer
from orderflow.config import Settings
from orderflow.db import Database
from orderflow.migrate import upgrade
from orderflow.people import service as people
from orderflow.people.models import User
from orderflow.serving import BackgroundServer
from orderflow.simulators import bobs_post, paydesk
from orderflow.simulators.mailsink import MailSink
from orderflow.web.app import create_app
from orderflow.web.context import DemoSimulators
from orderflow.wiring import build_adapters, build_worker

CUSTOMERS: list[dict[str, Any]] = [
    {
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "phone": "+44 20 7946 0000",
        "address": {
            "line1": "12 St James's Sq",
            "line2": None,
            "city": "London",
            "postcode": "SW1Y 4JH",
            "country": "GB",
        },
        "payment_method": "pm_ok_visa",
    },
    {
        "name": "Grace Hopper",
        "email": "grace@example.com",
        "phone": None,
        "address": {
            "line1": "1 Harbour Rd",
            "line2": "Unit 4",
            "city": "Dublin",
            "postcode": "D02 X285",
            "country": "IE",
        },
        "payment_method": "pm_ok_mastercard",
    },
    {
        "name": "Alan Turing",
        "email": "alan@example.com",
        "phone": "+44 161 496 0000",
        "address": {
            "line1": "Bletchley Park",
            "line2": None,
            "city": "Milton Keynes",
            "postcode": "MK3 6EB",
            "country": "GB",
        },
        "payment_method": "pm_declined",
    },
    {
        "name": "Edsger Dijkstra",
        "email": "edsger@example.com",
        "phone": None,
        "address": {
            "line1": "Lost Lane 1",
            "line2": None,
            "city": "Nuenen",
            "postcode": "LOST",
            "country": "NL",
        },
        "payment_method": "pm_ok_amex",
    },
]

PRODUCTS: list[dict[str, Any]] = [
    {
        "sku": "WIDGET",
        "name": "Widget",
        "price": 1299,
        "currency": "GBP",
        "weight_grams": 400,
        "stock": 500,
    },
    {
        "sku": "GADGET",
        "name": "Gadget",
        "price": 2599,
        "currency": "GBP",
        "weight_grams": 1200,
        "stock": 200,
    },
    {
        "sku": "GIZMO",
        "name": "Gizmo",
        "price": 499,
        "currency": "GBP",
        "weight_grams": 150,
        "stock": 1000,
    },
    {
        "sku": "DOOHICKEY",
        "name": "Doohickey",
        "price": 8900,
        "currency": "GBP",
        "weight_grams": 3000,
        "stock": 25,
    },
]


def seed(db: Database) -> None:
    """Demo customers and products, once."""
    with db.transaction() as session:
        if session.scalar(select(func.count()).select_from(Customer)):
            return
        for customer in CUSTOMERS:
            catalog.create_customer(session, **customer)
        for product in PRODUCTS:
            catalog.create_product(session, **product)


DEMO_USER = "demo"


def demo_login(db: Database) -> str:
    """The demo's console user (an admin), with a fresh password each start; returns it."""
    password = secrets.token_urlsafe(12)
    with db.transaction() as session:
        if session.scalar(select(User).where(User.name == DEMO_USER)) is None:
            people.add_user(session, DEMO_USER, "admin", password, actor="demo")
        else:
            people.set_password(session, DEMO_USER, password)
            people.enable_user(session, DEMO_USER)
    return password


@dataclass
class Simulated:
    carrier: BackgroundServer
    payments: BackgroundServer
    mail: MailSink

    def stop(self) -> None:
        self.carrier.stop()
        self.payments.stop()
        self.mail.stop()


def start_outside_world(
    api_url: str, *, progress_seconds: float
) -> tuple[Simulated, dict[str, Any]]:
    """Start the simulators and the mail sink; returns them and the settings that reach them."""
    carrier_key, paydesk_key = secrets.token_hex(8), secrets.token_hex(8)
    webhook_secret = secrets.token_hex(16)
    carrier = BackgroundServer(
        bobs_post.create_app(
            api_key=carrier_key,
            webhook_secret=webhook_secret,
            switches=bobs_post.BobsPostSwitches(
                progress_seconds=progress_seconds, webhook_url=f"{api_url}/webhooks/bobs-post"
            ),
        )
    ).start()
    payments = BackgroundServer(paydesk.create_app(api_key=paydesk_key)).start()
    mail = MailSink().start()
    overrides = {
        "bobs_post_url": carrier.url,
        "bobs_post_api_key": carrier_key,
        "bobs_post_webhook_secret": webhook_secret,
        "paydesk_url": payments.url,
        "paydesk_api_key": paydesk_key,
        "smtp_url": mail.smtp_url,
    }
    return Simulated(carrier, payments, mail), overrides


def listen(host: str, port: int) -> socket.socket:
    """The demo's listening socket, taken before anything starts or is printed: a busy port is
    one clear error (and a non-zero exit), not a 'running' banner followed by a traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise click.ClickException(
            f"cannot listen on {host}:{port} ({reason}): is another orderflow demo running? "
            "Stop it, or choose another port with --port."
        ) from None


def run(settings: Settings, *, host: str, port: int, progress_seconds: float) -> None:
    sock = listen(host, port)
    port = sock.getsockname()[1]
    api_url = f"http://{host}:{port}"
    outside, overrides = start_outside_world(api_url, progress_seconds=progress_seconds)
    token = settings.admin_token or secrets.token_urlsafe(18)
    settings = settings.model_copy(
        update={
            **overrides,
            "admin_token": token,
            "tracking_poll_seconds": min(settings.tracking_poll_seconds, 20.0),
            "retry_max_seconds": min(settings.retry_max_seconds, 30.0),
            "retry_base_seconds": min(settings.retry_base_seconds, 1.0),
            "worker_idle_seconds": min(settings.worker_idle_seconds, 0.2),
            # Logistics alerts (a lost parcel…) land in the demo mailbox too.
            "logistics_email": settings.logistics_email or "logistics@shop.example",
            "alert_check_seconds": min(settings.alert_check_seconds, 5.0),
        }
    )
    db = Database(settings.database_url)
    upgrade(db.engine)
    seed(db)
    password = demo_login(db)
    adapters = build_adapters(settings)
    worker = build_worker(settings, db, adapters, name="demo-worker")
    stop = threading.Event()
    worker_thread = threading.Thread(target=worker.run, args=(stop,), name="orderflow-worker")
    worker_thread.start()
    simulators = DemoSimulators(bobs_post_url=outside.carrier.url, paydesk_url=outside.payments.url)
    app = create_app(settings, db, mailbox=outside.mail, demo=simulators)
    click.echo(
        "\n".join(
            [
                "",
                "orderflow demo is running.",
                f"  console:      {api_url}/console/login",
                f"                user {DEMO_USER}, password {password} (a new one each start)",
                f"  API:          {api_url}/api/v1   (OpenAPI: {api_url}/docs)",
                f"  admin token:  {token}",
                f"  database:     {settings.database_url}",
                f"  Bob's Post:   {outside.carrier.url} (simulated)",
                f"  Paydesk:      {outside.payments.url} (simulated)",
                f"  mail sink:    {outside.mail.smtp_url} (messages in the console's mailbox)",
                "Press Ctrl+C to stop.",
                "",
            ]
        )
    )
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    finally:
        sock.close()
        stop.set()
        worker_thread.join(timeout=30)
        adapters.close()
        outside.stop()
        db.dispose()
