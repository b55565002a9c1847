"""The Bob's Post simulator under load, over real HTTP: every webhook arrives, few at a time."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from orderflow.serving import BackgroundServer
from orderflow.shipping.signature import HEADER, BadSignature, verify
from orderflow.simulators.bobs_post import BobsPostSwitches, create_app

from .test_bobs_post_sim import API_KEY, AUTH, SECRET, booking

SHIPMENTS = 1000
SENDERS = 8
HOLD_SECONDS = 0.01  # the receiver answers each webhook this late, so that they overlap


class _Hook(asyncio.Protocol):
    """One connection to `LeanReceiver`: minimal HTTP/1.1, answers each request in turn."""

    def __init__(self, receiver: LeanReceiver) -> None:
        self.receiver = receiver
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            lines = self.buffer[:end].decode().split("\r\n")[1:]
            headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in lines)}
            size = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + size:
                return
            body, self.buffer = self.buffer[end + 4 : end + 4 + size], self.buffer[end + 4 + size :]
            status = self.receiver.take(body, headers.get(HEADER.lower()))
            asyncio.get_running_loop().call_later(HOLD_SECONDS, self.answer, status)

    def answer(self, status: int) -> None:
        self.receiver.in_flight -= 1
        assert self.transport is not None
        reason = {204: "No Content", 400: "Bad Request", 500: "Internal Server Error"}[status]
        self.transport.write(f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\n\r\n".encode())


class LeanReceiver:
    """A webhook endpoint cheap enough for thousands of webhooks in a test: its own thread and
    loop, raw asyncio. Counts the requests it holds at once; fails the first delivery of every
    tenth event with a 500, so that retries go through the same bounded senders."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.events: Counter[str] = Counter()
        self.statuses: dict[str, list[str]] = {}
        self.refused: set[str] = set()
        self.bad_signatures = self.in_flight = self.most_in_flight = 0
        server = self.loop.run_until_complete(
            self.loop.create_server(lambda: _Hook(self), "127.0.0.1", 0)
        )
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def take(self, body: bytes, signature: str | None) -> int:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            verify(SECRET, body, signature, time.time(), 300)
        except BadSignature:
            self.bad_signatures += 1
            return 400
        event = json.loads(body)
        if hash(event["event_id"]) % 10 == 0 and event["event_id"] not in self.refused:
            self.refused.add(event["event_id"])
            return 500
        self.events[event["event_id"]] += 1
        self.statuses.setdefault(event["shipment_id"], []).append(event["status"])
        return 204

    def __enter__(self) -> LeanReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[LeanReceiver]:
    with LeanReceiver() as r:
        yield r


@pytest.mark.timeout(60)
def test_a_thousand_parcels_at_once_lose_no_webhook_and_stay_within_the_senders(
    receiver: LeanReceiver,
) -> None:
    """1,000 parcels moving in lockstep: all 4,000 webhooks arrive, at most SENDERS at a time."""
    switches = BobsPostSwitches(
        progress_seconds=3600,  # parked until every booking is in, then all move at once
        webhook_url=receiver.url,
        rate_limit_per_second=1_000_000,
        webhook_retry_seconds=0.01,
    )
    app = create_app(
        api_key=API_KEY, webhook_secret=SECRET, switches=switches, webhook_senders=SENDERS
    )
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:

        def book(i: int) -> str:
            key = {"Idempotency-Key": f"load-{i}", **AUTH}
            response = client.post("/v1/shipments", json=booking(f"ORD-{i:06d}"), headers=key)
            assert response.status_code == 201
            return str(response.json()["id"])

        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(book, range(SHIPMENTS)))
        client.patch("/_sim/switches", json={"progress_seconds": 0.05}).raise_for_status()
        expected = 4 * SHIPMENTS
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            stats = client.get("/_sim/stats").json()
            if stats["webhooks_sent"] + stats["webhooks_failed"] >= expected:
                break
            time.sleep(0.1)

    path = ["collected", "in_transit", "out_for_delivery", "complete"]
    assert sum(receiver.events.values()) == expected and set(receiver.events.values()) == {1}
    assert all(sorted(receiver.statuses[i], key=path.index) == path for i in ids)
    assert receiver.refused and receiver.bad_signatures == 0
    assert (stats["webhooks_sent"], stats["webhooks_failed"]) == (expected, 0)
    assert (stats["webhooks_lost"], stats["webhooks_duplicated"]) == (0, 0)
    # Thousands were due at once: the senders were all busy, and never more than them.
    assert receiver.most_in_flight == SENDERS
