"""The outside world on real ports: Bob's Post and Paydesk simulators and an SMTP mail sink."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from orderflow.serving import BackgroundServer
from orderflow.simulators import bobs_post, paydesk
from orderflow.simulators.mailsink import MailSink


@dataclass
class Outside:
    carrier: BackgroundServer
    payments: BackgroundServer
    mail: MailSink
    carrier_key: str
    paydesk_key: str
    webhook_secret: str
    _http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    def settings(self) -> dict[str, Any]:
        return {
            "bobs_post_url": self.carrier.url,
            "bobs_post_api_key": self.carrier_key,
            "bobs_post_webhook_secret": self.webhook_secret,
            "paydesk_url": self.payments.url,
            "paydesk_api_key": self.paydesk_key,
            "smtp_url": self.mail.smtp_url,
        }

    def carrier_switches(self, **switches: Any) -> None:
        self._http.patch(f"{self.carrier.url}/_sim/switches", json=switches).raise_for_status()

    def paydesk_switches(self, **switches: Any) -> None:
        self._http.patch(f"{self.payments.url}/_sim/switches", json=switches).raise_for_status()

    def carrier_stats(self) -> dict[str, Any]:
        return dict(self._http.get(f"{self.carrier.url}/_sim/stats").json())

    def paydesk_stats(self) -> dict[str, Any]:
        return dict(self._http.get(f"{self.payments.url}/_sim/stats").json())

    def force_carrier_status(self, shipment_id: str, status: str) -> None:
        self._http.post(
            f"{self.carrier.url}/_sim/shipments/{shipment_id}/status", json={"status": status}
        ).raise_for_status()

    def stop(self) -> None:
        self._http.close()
        self.carrier.stop()
        self.payments.stop()
        self.mail.stop()


def start_outside(*, webhook_url: str | None, progress_seconds: float = 0.05) -> Outside:
    carrier_key, paydesk_key = secrets.token_hex(6), secrets.token_hex(6)
    webhook_secret = secrets.token_hex(12)
    carrier = BackgroundServer(
        bobs_post.create_app(
            api_key=carrier_key,
            webhook_secret=webhook_secret,
            switches=bobs_post.BobsPostSwitches(
                progress_seconds=progress_seconds, webhook_url=webhook_url, seed=7
            ),
        )
    ).start()
    payments = BackgroundServer(
        paydesk.create_app(api_key=paydesk_key, switches=paydesk.PaydeskSwitches(seed=7))
    ).start()
    mail = MailSink().start()
    return Outside(carrier, payments, mail, carrier_key, paydesk_key, webhook_secret)


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(every)
