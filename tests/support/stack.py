"""A whole orderflow in the test process: API server, simulators, mail sink, a worker."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx

from orderflow.config import Settings
from orderflow.db import Database
from orderflow.people import service as people
from orderflow.serving import BackgroundServer
from orderflow.tasks.worker import Worker
from orderflow.web.app import create_app
from orderflow.web.context import DemoSimulators
from orderflow.wiring import Adapters, build_adapters, build_worker
from tests.support.outside import Outside, start_outside

PASSWORD = "correct horse battery"  # every test user's password unless told

FAST = {
    "retry_base_seconds": 0.05,
    "retry_max_seconds": 0.4,
    "tracking_poll_seconds": 2.0,
    "lease_seconds": 5.0,
    "http_timeout_seconds": 2.0,
    "worker_idle_seconds": 0.02,
}

ADDRESS = {
    "line1": "12 St James's Sq",
    "line2": None,
    "city": "London",
    "postcode": "SW1Y 4JH",
    "country": "GB",
}


@dataclass
class Stack:
    settings: Settings
    db: Database
    server: BackgroundServer
    outside: Outside
    adapters: Adapters
    worker: Worker
    api: httpx.Client  # the bootstrap admin token (ORDERFLOW_ADMIN_TOKEN)
    clients: list[httpx.Client] = field(default_factory=list)

    # --- arranging -----------------------------------------------------------------------
    def customer(self, payment_method: str = "pm_ok_visa", **address: Any) -> int:
        body = {
            "name": "Ada Lovelace",
            "email": f"ada+{secrets.token_hex(3)}@example.com",
            "phone": "+44 20 7946 0000",
            "address": {**ADDRESS, **address},
            "payment_method": payment_method,
        }
        response = self.api.post("/customers", json=body)
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def product(self, sku: str = "WIDGET", stock: int = 100, price: int = 1299) -> str:
        body = {
            "sku": sku,
            "name": sku.title(),
            "price": price,
            "currency": "GBP",
            "weight_grams": 400,
            "stock": stock,
        }
        response = self.api.post("/products", json=body)
        assert response.status_code == 201, response.text
        return sku

    def place(
        self, customer_id: int, lines: list[tuple[str, int]], key: str | None = None
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": key} if key else {}
        body = {"customer_id": customer_id, "lines": [{"sku": s, "quantity": q} for s, q in lines]}
        response = self.api.post("/orders", json=body, headers=headers)
        assert response.status_code == 202, response.text
        return dict(response.json())

    def user(self, name: str, role: str = "admin", password: str = PASSWORD) -> None:
        """A named user (password `PASSWORD` unless told)."""
        with self.db.transaction() as session:
            people.add_user(session, name, role, password, actor="test")

    def as_user(self, name: str, role: str = "admin") -> httpx.Client:
        """A new named user with a personal API token: an API client acting as them."""
        self.user(name, role)
        with self.db.transaction() as session:
            token = people.create_token(session, name, timedelta(days=1)).token
        return self.client(token)

    def client(self, token: str) -> httpx.Client:
        client = httpx.Client(
            base_url=f"{self.server.url}/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        self.clients.append(client)
        return client

    # --- acting and observing ------------------------------------------------------------
    def order(self, order_id: int) -> dict[str, Any]:
        response = self.api.get(f"/orders/{order_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def work_until(self, condition: Callable[[], bool], timeout: float = 20.0) -> None:
        """Drive the worker until `condition` holds (webhooks arrive meanwhile, as in life)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s")
            if self.worker.run_once() == 0:
                time.sleep(0.02)

    def work_until_status(
        self, order_id: int, *statuses: str, timeout: float = 20.0
    ) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def reached() -> bool:
            seen.update(self.order(order_id))
            return seen["status"] in statuses

        try:
            self.work_until(reached, timeout)
        except AssertionError:
            brief = {k: seen.get(k) for k in ("reference", "status", "shipment", "work")}
            history = [(h["action"], h["to"]) for h in seen.get("history", [])]
            raise AssertionError(f"never reached {statuses}: {brief} history={history}") from None
        return seen

    def mails_to(self, address: str) -> list[Any]:
        return [m for m in self.outside.mail.messages() if address in m.rcpt_to]


@contextmanager
def start_stack(database_url: str, **overrides: Any) -> Iterator[Stack]:
    """`demo=True` among the overrides: the console knows the simulators, as under
    `orderflow demo` (its switches page); the others are settings."""
    demo = bool(overrides.pop("demo", False))
    webhook_secret_holder: dict[str, str] = {}
    outside = start_outside(webhook_url=None)
    webhook_secret_holder["secret"] = outside.webhook_secret
    settings = Settings(
        _env_file=None,
        database_url=database_url,
        admin_token="test-token",
        mail_from="orders@shop.example",
        **{**FAST, **outside.settings(), **overrides},
    )
    db = Database(database_url)
    simulators = DemoSimulators(outside.carrier.url, outside.payments.url) if demo else None
    app = create_app(settings, db, mailbox=outside.mail, demo=simulators)
    server = BackgroundServer(app).start()
    outside.carrier_switches(webhook_url=f"{server.url}/webhooks/bobs-post")
    adapters = build_adapters(settings)
    worker = build_worker(settings, db, adapters, name="test-worker")
    api = httpx.Client(
        base_url=f"{server.url}/api/v1",
        headers={"Authorization": "Bearer test-token"},
        timeout=10,
    )
    stack = Stack(settings, db, server, outside, adapters, worker, api)
    try:
        yield stack
    finally:
        for client in [api, *stack.clients]:
            client.close()
        server.stop()
        adapters.close()
        outside.stop()
        db.dispose()
