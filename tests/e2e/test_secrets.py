"""No secret leaves orderflow: not in a log line, an error, a dead letter's evidence or an answer.

`orderflow serve` and `orderflow worker` run as real processes with distinct, recognisable
secrets configured (admin token, Paydesk and Bob's Post API keys, webhook secret, Slack webhook
URL, and passwords in the database, SMTP and RabbitMQ URLs), through the failure paths that
quote URLs and outside answers: Slack answering 500 until the alert is a dead letter, an SMTP
server that refuses a recipient, a declined card, an unknown payment method, an address Bob's
Post refuses, Bob's Post down, RabbitMQ refusing the login. Then everything written is searched
for every secret: both processes' stdout and stderr, every row of every table, and the API's
answers.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import create_engine, inspect, text

from orderflow.serving import BackgroundServer
from orderflow.shipping import signature
from orderflow.simulators import bobs_post, paydesk
from tests.support.processes import (
    FAST_KNOBS,
    ProcessGroup,
    clean_environ,
    free_ports,
    wait_http_ready,
    wait_log_line,
    wait_until,
)
from tests.support.slack import SlackReceiver

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

SMTP_USER = "alerts"


def _secret(prefix: str) -> str:
    return f"{prefix}-SECRET-{secrets.token_hex(8)}"


@dataclass(frozen=True)
class Secrets:
    admin_token: str = field(default_factory=lambda: _secret("admtok"))
    paydesk_key: str = field(default_factory=lambda: _secret("pdkey"))
    carrier_key: str = field(default_factory=lambda: _secret("bpkey"))
    webhook_secret: str = field(default_factory=lambda: _secret("whsec"))
    # The secret part of a Slack webhook URL (its last path segment).
    slack_token: str = field(default_factory=lambda: _secret("slack"))
    database_password: str = field(default_factory=lambda: _secret("pgpw"))
    smtp_password: str = field(default_factory=lambda: _secret("smtppw"))
    amqp_password: str = field(default_factory=lambda: _secret("amqppw"))

    def named(self) -> dict[str, str]:
        return dict(vars(self))


class AuthenticatingSmtp:
    """An SMTP server that wants a login (the password in ORDERFLOW_SMTP_URL) and refuses
    every recipient whose address starts with `refused`."""

    def __init__(self, password: str) -> None:
        self.password = password.encode()
        self.delivered: list[str] = []
        self.logins = 0
        self.port = free_ports(1)[0]
        self.controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=self._authenticate,
            auth_require_tls=False,
        )

    def _authenticate(self, *args: Any) -> AuthResult:
        data = args[-1]
        ok = isinstance(data, LoginPassword) and data.password == self.password
        self.logins += ok
        return AuthResult(success=ok)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.startswith("refused"):
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.delivered += envelope.rcpt_tos
        return "250 accepted"


@contextmanager
def outside_world(keys: Secrets) -> Iterator[tuple[BackgroundServer, BackgroundServer, Any, Any]]:
    carrier = BackgroundServer(
        bobs_post.create_app(
            api_key=keys.carrier_key,
            webhook_secret=keys.webhook_secret,
            switches=bobs_post.BobsPostSwitches(progress_seconds=0.1, seed=7),
        )
    ).start()
    payments = BackgroundServer(
        paydesk.create_app(api_key=keys.paydesk_key, switches=paydesk.PaydeskSwitches(seed=7))
    ).start()
    smtp = AuthenticatingSmtp(keys.smtp_password)
    smtp.controller.start()
    slack = SlackReceiver(path=f"/services/T0ORDERFLOW/B0ALERTS/{keys.slack_token}")
    slack.failing_status = 500
    slack.__enter__()
    try:
        yield carrier, payments, smtp, slack
    finally:
        slack.__exit__()
        smtp.controller.stop()
        payments.stop()
        carrier.stop()


def _with_password(url: str, password: str) -> str:
    # PostgreSQL trusts 127.0.0.1 here: the password is carried (and could leak), not checked.
    return url.replace("://postgres@", f"://postgres:{password}@", 1)


def _dump_database(url: str) -> str:
    """Every row of every table, as text."""
    engine = create_engine(url)
    try:
        lines = []
        with engine.connect() as connection:
            for table in inspect(connection).get_table_names():
                for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                    lines.append(f"{table}: {tuple(row)!r}")
        return "\n".join(lines)
    finally:
        engine.dispose()


def _leaks(keys: Secrets, written: dict[str, str]) -> list[str]:
    return [
        f"{name} in {where}"
        for where, content in written.items()
        for name, value in keys.named().items()
        if value in content
    ]


def test_no_secret_in_logs_database_or_answers_through_the_failure_paths(
    processes: ProcessGroup, own_pg_url: str
) -> None:
    """Slack 500s to a dead letter, SMTP refusal, Paydesk and Bob's Post errors, RabbitMQ
    refusing the login: no configured secret in any process output, table row or answer."""
    keys = Secrets()
    database_url = _with_password(own_pg_url, keys.database_password)
    serve_port = free_ports(1)[0]
    api_url = f"http://127.0.0.1:{serve_port}"
    with outside_world(keys) as (carrier, payments, smtp, slack):
        env = clean_environ(
            {
                **FAST_KNOBS,
                "ORDERFLOW_DATABASE_URL": database_url,
                "ORDERFLOW_ADMIN_TOKEN": keys.admin_token,
                "ORDERFLOW_BOBS_POST_URL": carrier.url,
                "ORDERFLOW_BOBS_POST_API_KEY": keys.carrier_key,
                "ORDERFLOW_BOBS_POST_WEBHOOK_SECRET": keys.webhook_secret,
                "ORDERFLOW_PAYDESK_URL": payments.url,
                "ORDERFLOW_PAYDESK_API_KEY": keys.paydesk_key,
                "ORDERFLOW_SMTP_URL": f"smtp://{SMTP_USER}:{keys.smtp_password}@127.0.0.1:"
                f"{smtp.port}",
                "ORDERFLOW_MAIL_FROM": "orders@shop.example",
                "ORDERFLOW_LOGISTICS_EMAIL": "refused-logistics@shop.example",
                "ORDERFLOW_SLACK_WEBHOOK_URL": slack.url,
                "ORDERFLOW_BROKER_URL": f"amqp://orderflow:{keys.amqp_password}@127.0.0.1:5672/",
                "ORDERFLOW_MAX_ATTEMPTS": "2",
                "ORDERFLOW_AUTO_REDRIVE": "false",
                "ORDERFLOW_ALERT_CHECK_SECONDS": "0.3",
                "ORDERFLOW_ALERT_DEPENDENCY_DOWN_SECONDS": "0.5",
                "ORDERFLOW_BREAKER_FAILURE_THRESHOLD": "2",
                "ORDERFLOW_BREAKER_PROBE_SECONDS": "0.3",
            }
        )
        processes.run("migrate", ["migrate"], env)
        serve = processes.start("serve", ["serve", "--port", str(serve_port)], env)
        wait_http_ready(serve, f"{api_url}/readyz")
        http = httpx.Client(timeout=10)
        http.patch(
            f"{carrier.url}/_sim/switches",
            json={"webhook_url": f"{api_url}/webhooks/bobs-post", "outage": "503"},
        ).raise_for_status()
        api = httpx.Client(
            base_url=f"{api_url}/api/v1",
            headers={"Authorization": f"Bearer {keys.admin_token}"},
            timeout=10,
        )
        worker = processes.start("worker", ["worker", "--name", "w1"], env)
        wait_log_line(worker, "worker.started")

        assert api.post(
            "/products",
            json={
                "sku": "WIDGET",
                "name": "Widget",
                "price": 1299,
                "currency": "GBP",
                "weight_grams": 300,
                "stock": 50,
            },
        ).is_success

        def customer(n: int, email: str, payment_method: str, country: str = "GB") -> int:
            body = {
                "name": f"Customer {n}",
                "email": email,
                "phone": None,
                "address": {"line1": "1 High St", "city": "London", "postcode": "N1 1AA"}
                | {"country": country},
                "payment_method": payment_method,
            }
            response = api.post("/customers", json=body)
            assert response.status_code == 201, response.text
            return int(response.json()["id"])

        buyers = [
            customer(1, "ada@example.com", "pm_ok_1"),
            customer(2, "alan@example.com", "pm_declined"),
            customer(3, "grace@example.com", "pm_nobody_knows"),
            customer(4, "edsger@example.com", "pm_ok_4", country="XX"),
            customer(5, "refused@example.com", "pm_ok_5"),
        ]
        orders = []
        for n, buyer in enumerate(buyers):
            body = {"customer_id": buyer, "lines": [{"sku": "WIDGET", "quantity": 1}]}
            placed = api.post("/orders", json=body, headers={"Idempotency-Key": f"leak-{n}"})
            assert placed.status_code == 202, placed.text
            orders.append(int(placed.json()["id"]))

        def dead(kind: str) -> int:
            found = api.get("/dead-letters", params={"step": kind}).json()
            return int(found["total"])

        time.sleep(1.5)  # Bob's Post down long enough for its breaker and a Slack alert
        http.patch(f"{carrier.url}/_sim/switches", json={"outage": None}).raise_for_status()
        wait_until(
            lambda: all(dead(kind) for kind in ("book", "notify", "alert_slack", "charge")),
            timeout=90,
            every=0.3,
            what="dead letters of a booking, an e-mail, a Slack alert and a charge",
        )
        wait_until(lambda: slack.refused >= 2 and smtp.logins > 0, timeout=30, what="tries")

        answers = {"401": api.get("/orders", headers={"Authorization": "Bearer wrong"}).text}
        bad_signature = signature.sign("not-the-secret", b"{}", int(time.time()))
        answers["webhook"] = httpx.post(
            f"{api_url}/webhooks/bobs-post",
            content=b"{}",
            headers={signature.HEADER: bad_signature},
        ).text
        for path in ("/dead-letters", "/dependencies", "/orders"):
            answers[path] = api.get(path).text
        for letter in api.get("/dead-letters").json()["data"]:
            answers[f"dead letter {letter['id']}"] = api.get(f"/dead-letters/{letter['id']}").text
        for order_id in orders:
            answers[f"order {order_id}"] = api.get(f"/orders/{order_id}").text
            answers[f"investigation {order_id}"] = api.get(f"/orders/{order_id}/investigation").text
        answers["readyz"] = httpx.get(f"{api_url}/readyz").text
        answers["metrics"] = httpx.get(f"{api_url}/metrics").text
        api.close()
        http.close()
        processes.stop_all()

    written = {f"log {p.name}": p.read_text() for p in sorted(processes.logs.glob("*.log"))}
    written["database"] = _dump_database(own_pg_url)
    written |= {f"answer {k}": v for k, v in answers.items()}
    # The evidence is there (the failures were recorded), only the secrets are not.
    assert "Slack POST" in written["database"] and "HTTP 500" in written["database"]
    assert "SMTP refused the recipient" in written["database"]
    assert _leaks(keys, written) == []


BAD_URLS = {
    "ORDERFLOW_SMTP_URL": [
        "smtp://alerts:{pw}@mail.example:notaport",
        "smtp://alerts:{pw}@mail.example:99999",
        "smtpx://alerts:{pw}@mail.example:25",
        "alerts:{pw}@mail.example",
    ],
    "ORDERFLOW_DATABASE_URL": ["postgresql+psycopg://app:{pw}@db.example:port/orderflow"],
    "ORDERFLOW_BROKER_URL": ["amqp://app:{pw}@mq.example:notaport/"],
    "ORDERFLOW_SLACK_WEBHOOK_URL": ["hooks.slack.example/services/T0/B0/{pw}"],
}


@pytest.mark.parametrize(
    ("setting", "url"), [(name, url) for name, urls in BAD_URLS.items() for url in urls]
)
def test_an_invalid_url_setting_is_a_clean_error_without_its_password(
    tmp_path: Path, setting: str, url: str
) -> None:
    """`orderflow worker` with a malformed URL setting: one line naming the setting, exit 1,
    no traceback, and neither the password nor (for a webhook URL) the secret path in it."""
    password = _secret("badurl")
    env = clean_environ(
        {
            "ORDERFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'orderflow.db'}",
            "ORDERFLOW_PAYDESK_URL": "http://127.0.0.1:9",
            "ORDERFLOW_BOBS_POST_URL": "http://127.0.0.1:9",
            "ORDERFLOW_SMTP_URL": "smtp://127.0.0.1:9",
            setting: url.format(pw=password),
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "orderflow", "worker", "--migrate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output
    assert f"invalid configuration: {setting}" in output
    assert password not in output
