"""Bob's Post simulator: the carrier API of specs/bobs-post-api.md, misbehaviour on switches."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orderflow.shipping.signature import HEADER, sign
from orderflow.simulators.chaos import (
    Chaos,
    ChaosSwitches,
    error_body,
    fingerprint,
    first_error,
    utc_now,
)

_ISO_CODES = (  # the ISO 3166-1 alpha-2 codes Bob's Post delivers to
    "GB IE FR DE NL BE LU ES PT IT AT CH DK SE NO FI IS PL CZ SK HU SI HR RO BG GR CY MT "
    "EE LV LT US CA MX AU NZ JP SG HK ZA AE IN BR"
)
COUNTRIES = frozenset(_ISO_CODES.split())
STATUSES = (
    "booked",
    "collected",
    "in_transit",
    "out_for_delivery",
    "failed_attempt",
    "complete",
    "returned_to_sender",
    "lost",
    "cancelled",
)
_NORMAL = ("booked", "collected", "in_transit", "out_for_delivery", "complete")
_PATHS: dict[str, tuple[str, ...]] = {  # special postcodes that drive the failure paths
    "LOST": ("booked", "collected", "lost"),
    "RETURN": (*_NORMAL[:4], "failed_attempt", "returned_to_sender"),
    "STUCK": ("booked",),
}
WEBHOOK_SENDERS = 32  # webhook requests in flight at most, whatever the load
_HUB = "Bob's Post hub, Daventry"
_WHERE = {  # status -> (location, description); None = the recipient's city
    "booked": ("Online", "Label created, awaiting collection"),
    "collected": ("Merchant warehouse", "Parcel collected from the sender"),
    "in_transit": (_HUB, "Parcel in transit"),
    "out_for_delivery": (None, "Out for delivery with the courier"),
    "failed_attempt": (None, "Recipient not available; we will try again"),
    "complete": (None, "Delivered"),
    "returned_to_sender": (_HUB, "Could not be delivered; returning to sender"),
    "lost": ("Bob's Post network", "Parcel lost"),
    "cancelled": ("Online", "Shipment cancelled"),
}


@dataclass
class BobsPostSwitches(ChaosSwitches):
    """Runtime switches (see ChaosSwitches for outage, rate limit, 5xx and ambiguous answers)."""

    rate_limit_per_second: int = 50
    progress_seconds: float = 2.0  # pace at which a parcel advances one status
    webhook_url: str | None = None  # where signed webhooks go; None = none sent
    webhook_duplicate_rate: float = 0.0  # fraction of webhooks sent twice (same event_id)
    webhook_loss_rate: float = 0.0  # fraction never sent
    webhook_shuffle_seconds: float = 0.0  # each webhook delayed by random(0, this)
    webhooks_during_outage: bool = False  # the spec: webhooks due during an outage are lost
    webhook_retries: int = 3  # retries after a non-2xx or connection error, then dropped
    webhook_retry_seconds: float = 0.1  # first retry delay, doubling


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, str_strip_whitespace=True)


class _Address(_Strict):
    line1: str = Field(min_length=1)
    line2: str | None = None
    city: str = Field(min_length=1)
    postcode: str = Field(min_length=1)
    country: str

    @field_validator("country")
    @classmethod
    def _known_country(cls, value: str) -> str:
        if value not in COUNTRIES:
            raise ValueError(f"unknown country {value!r} (ISO 3166-1 alpha-2 expected)")
        return value


class _Recipient(_Strict):
    name: str = Field(min_length=1)
    email: str | None = None
    phone: str | None = None
    address: _Address


class _Parcel(_Strict):
    weight_grams: int = Field(gt=0)
    description: str | None = None


class _Booking(_Strict):
    reference: str = Field(min_length=1, max_length=255)
    recipient: _Recipient
    parcels: list[_Parcel] = Field(min_length=1)
    service: Literal["standard", "express", "next_day"] = "standard"


@dataclass
class _Shipment:
    id: str
    reference: str
    tracking_number: str
    created_at: str
    postcode: str
    city: str
    status: str = "booked"
    changed_at: float = field(default_factory=time.monotonic)
    events: list[dict[str, Any]] = field(default_factory=list)

    def public(self, *, events: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "reference": self.reference,
            "status": self.status,
            "tracking_number": self.tracking_number,
            "created_at": self.created_at,
        }
        if events:
            out["events"] = list(self.events)
        return out

    def next_status(self) -> str | None:
        path = _PATHS.get(self.postcode.upper().replace(" ", ""), _NORMAL)
        if self.status not in path or self.status == path[-1]:
            return None  # terminal, or forced off its path: it stays where it is
        return path[path.index(self.status) + 1]


@dataclass(frozen=True, slots=True)
class _Webhook:
    """One copy of a webhook on its way: where, what, and how many attempts it has had."""

    url: str
    body: bytes
    attempts: int = 0


def invalid(message: str, field_name: str | None) -> JSONResponse:
    """A 422 `invalid_request` naming the offending field."""
    body = error_body("invalid_request", message, field=field_name)
    return JSONResponse(body, status_code=422)


class _Carrier:
    """The simulator's in-memory state; every method runs on the server's event loop."""

    def __init__(
        self,
        api_key: str,
        webhook_secret: str,
        switches: BobsPostSwitches,
        senders: int = WEBHOOK_SENDERS,
    ) -> None:
        self.api_key = api_key
        self.secret = webhook_secret
        self.switches = switches
        self.chaos = Chaos(switches)
        self.ids = random.Random()
        # Webhooks wait for their due time in the event loop's timer heap (call_later), then in
        # `queue` for one of `senders` tasks, each with a client of one connection. One task per
        # webhook on a shared pool made httpcore scan every connection (a syscall each) for
        # every waiting request on each event: the simulator went CPU-bound under load.
        self.senders = senders
        self.clients: list[httpx.AsyncClient] = []
        self.queue: asyncio.Queue[_Webhook] = asyncio.Queue()
        self.sender_tasks: list[asyncio.Task[None]] = []
        self.reset()

    def start(self) -> None:
        """Open the webhook clients and start the senders (on the server's event loop)."""
        one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        tls = httpx.create_ssl_context()  # loading the CA bundle once, not once per client
        self.clients = [
            httpx.AsyncClient(timeout=5.0, limits=one, verify=tls) for _ in range(self.senders)
        ]
        self._start_senders()

    async def stop(self) -> None:
        for task in self.sender_tasks:
            task.cancel()
        await asyncio.gather(*self.sender_tasks, return_exceptions=True)
        await asyncio.gather(*(client.aclose() for client in self.clients))

    def _start_senders(self) -> None:
        queue, loop = self.queue, asyncio.get_running_loop()
        self.sender_tasks = [loop.create_task(self._sender(queue, c)) for c in self.clients]

    def reset(self) -> None:
        # Webhooks in flight die with their senders; those waiting, or still due, go to a queue
        # nobody reads any more (their timers hold the old one).
        for task in self.sender_tasks:
            task.cancel()
        self.queue = asyncio.Queue()
        if self.clients:
            self._start_senders()
        self.chaos.reset()
        self.shipments: dict[str, _Shipment] = {}
        self.moving: dict[str, _Shipment] = {}  # those that will advance by themselves
        self.keys: dict[str, tuple[str, str]] = {}  # idempotency key -> (fingerprint, id)
        self.tracking: set[str] = set()
        self.bookings: Counter[str] = Counter()
        self.webhooks: Counter[str] = Counter()
        self.cancels = 0

    def stats(self) -> dict[str, Any]:
        return {
            "bookings_by_reference": dict(self.bookings),
            **self.chaos.stats(),
            "webhooks_sent": self.webhooks["sent"],
            "webhooks_failed": self.webhooks["failed"],
            "webhooks_lost": self.webhooks["lost"],
            "webhooks_duplicated": self.webhooks["duplicated"],
            "cancels": self.cancels,
        }

    def book(self, booking: _Booking) -> _Shipment:
        tracking = f"BP{self.ids.randrange(10**9):09d}GB"
        while tracking in self.tracking:
            tracking = f"BP{self.ids.randrange(10**9):09d}GB"
        self.tracking.add(tracking)
        address = booking.recipient.address
        ship = _Shipment(
            id=f"bp_shp_{uuid.uuid4().hex}",
            reference=booking.reference,
            tracking_number=tracking,
            created_at=utc_now(),
            postcode=address.postcode,
            city=address.city,
        )
        self.shipments[ship.id] = ship
        self.bookings[ship.reference] += 1
        self._record(ship, "booked", ship.created_at)  # creation is not a change: no webhook
        return ship

    def _record(self, ship: _Shipment, status: str, occurred_at: str) -> None:
        location, description = _WHERE[status]
        event = {"status": status, "occurred_at": occurred_at}
        ship.events.append({**event, "location": location or ship.city, "description": description})
        ship.status = status
        ship.changed_at = time.monotonic()
        if ship.next_status() is None:
            self.moving.pop(ship.id, None)
        else:
            self.moving[ship.id] = ship

    def change(self, ship: _Shipment, status: str) -> None:
        """Move `ship` to `status`: record the event and send (or lose) its webhook."""
        occurred_at = utc_now()
        self._record(ship, status, occurred_at)
        s = self.switches
        if s.webhook_url is None:
            return
        lost_to_outage = s.outage is not None and not s.webhooks_during_outage
        if lost_to_outage or self.chaos.chance(s.webhook_loss_rate):
            self.webhooks["lost"] += 1
            return
        payload = {
            "event_id": f"bp_evt_{uuid.uuid4().hex}",
            "type": "shipment.status_changed",
            "shipment_id": ship.id,
            "reference": ship.reference,
            "status": status,
            "occurred_at": occurred_at,
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        copies = 2 if self.chaos.chance(s.webhook_duplicate_rate) else 1
        self.webhooks["duplicated"] += copies - 1
        for _ in range(copies):
            delay = self.chaos.rng.uniform(0, s.webhook_shuffle_seconds)
            self._due(_Webhook(s.webhook_url, body), delay)

    def _due(self, hook: _Webhook, delay: float) -> None:
        """Queue `hook` for the senders once `delay` seconds have passed."""
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self.queue.put_nowait, hook)
        else:
            self.queue.put_nowait(hook)

    async def _sender(self, queue: asyncio.Queue[_Webhook], client: httpx.AsyncClient) -> None:
        while True:
            self._attempt_done(await self._attempt(await queue.get(), client))

    async def _attempt(self, hook: _Webhook, client: httpx.AsyncClient) -> tuple[_Webhook, bool]:
        """POST `hook` once, signed now; whether the merchant answered 2xx."""
        headers = {
            "Content-Type": "application/json",
            HEADER: sign(self.secret, hook.body, int(time.time())),
        }
        try:
            response = await client.post(hook.url, content=hook.body, headers=headers)
        except Exception:  # httpx errors, and a bad URL, must not end the sender
            return hook, False
        return hook, response.is_success

    def _attempt_done(self, outcome: tuple[_Webhook, bool]) -> None:
        hook, ok = outcome
        if ok:
            self.webhooks["sent"] += 1
        elif hook.attempts < self.switches.webhook_retries:  # retry after a doubling delay
            delay = self.switches.webhook_retry_seconds * 2**hook.attempts
            self._due(replace(hook, attempts=hook.attempts + 1), delay)
        else:
            self.webhooks["failed"] += 1

    async def progress(self) -> None:
        """Advance every parcel one status each `progress_seconds`, forever."""
        while True:
            pace = self.switches.progress_seconds
            now = time.monotonic()
            for ship in list(self.moving.values()):
                status = ship.next_status()
                if status is not None and now - ship.changed_at >= pace:
                    self.change(ship, status)
            await asyncio.sleep(min(0.05, max(0.005, pace / 5)))


def create_app(
    *,
    api_key: str,
    webhook_secret: str,
    switches: BobsPostSwitches | None = None,
    webhook_senders: int = WEBHOOK_SENDERS,
) -> FastAPI:
    """The simulator as an ASGI app; `/v1` is Bob's Post's API, `/_sim` controls it (no auth).

    At most `webhook_senders` webhook requests are in flight; the others wait their turn."""
    if webhook_senders < 1:
        raise ValueError("webhook_senders must be at least 1")
    sim = _Carrier(api_key, webhook_secret, switches or BobsPostSwitches(), webhook_senders)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sim.start()
        ticker = asyncio.create_task(sim.progress())
        try:
            yield
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            await sim.stop()

    app = FastAPI(title="Bob's Post simulator", lifespan=lifespan)
    app.state.sim = sim
    sim.chaos.install(app)

    def unauthorized(request: Request) -> JSONResponse | None:
        if request.headers.get("authorization") == f"Bearer {sim.api_key}":
            return None
        return JSONResponse(error_body("unauthorized", "missing or wrong API key"), 401)

    def not_found(shipment_id: str) -> JSONResponse:
        return JSONResponse(error_body("not_found", f"no shipment {shipment_id}"), 404)

    @app.post("/v1/shipments", response_model=None)
    async def book(request: Request) -> JSONResponse:
        """Book; `Idempotency-Key` required; a replay answers 200 with the shipment as it is now."""
        if denied := unauthorized(request):
            return denied
        key = request.headers.get("idempotency-key", "")
        if not 1 <= len(key) <= 255:
            return JSONResponse(error_body("idempotency_key_required", "need 1-255 chars"), 400)
        try:
            raw = json.loads(await request.body())
        except ValueError:
            return invalid("body is not valid JSON", "body")
        if key in sim.keys:
            seen, shipment_id = sim.keys[key]
            if seen != fingerprint(raw):
                msg = "Idempotency-Key reused with a different body"
                return JSONResponse(error_body("idempotency_conflict", msg), 409)
            ship, status = sim.shipments[shipment_id], 200
        else:
            try:
                booking = _Booking.model_validate(raw)
            except ValidationError as exc:
                return invalid(*first_error(exc))
            ship, status = sim.book(booking), 201
            request.state.sim_event = "booked"  # logged with its answer (`/_sim/requests`)
            sim.keys[key] = (fingerprint(raw), ship.id)
        if sim.chaos.ambiguous():
            return await sim.chaos.ambiguous_response()
        return JSONResponse(ship.public(), status_code=status)

    @app.get("/v1/shipments", response_model=None)
    async def find(request: Request, reference: str | None = None) -> JSONResponse:
        if denied := unauthorized(request):
            return denied
        if not reference:
            return invalid("query parameter reference is required", "reference")
        found = [s.public() for s in sim.shipments.values() if s.reference == reference]
        return JSONResponse({"data": found})

    @app.get("/v1/shipments/{shipment_id}", response_model=None)
    async def get(request: Request, shipment_id: str) -> JSONResponse:
        if denied := unauthorized(request):
            return denied
        ship = sim.shipments.get(shipment_id)
        return JSONResponse(ship.public(events=True)) if ship else not_found(shipment_id)

    @app.post("/v1/shipments/{shipment_id}/cancel", response_model=None)
    async def cancel(request: Request, shipment_id: str) -> JSONResponse:
        """200 if still `booked` (or already `cancelled`), 409 once collected or later."""
        if denied := unauthorized(request):
            return denied
        ship = sim.shipments.get(shipment_id)
        if ship is None:
            return not_found(shipment_id)
        if ship.status not in ("booked", "cancelled"):
            msg = f"shipment is {ship.status}; only a booked shipment can be cancelled"
            return JSONResponse(error_body("not_cancellable", msg), 409)
        if ship.status == "booked":
            sim.change(ship, "cancelled")
            sim.cancels += 1
        if sim.chaos.ambiguous():
            return await sim.chaos.ambiguous_response()
        return JSONResponse(ship.public())

    @app.get("/_sim/stats")
    async def stats() -> dict[str, Any]:
        return sim.stats()

    @app.post("/_sim/shipments/{shipment_id}/status", response_model=None)
    async def force(shipment_id: str, request: Request) -> JSONResponse:
        """Force a status (event + webhook); off its postcode's path, a parcel stops there."""
        ship = sim.shipments.get(shipment_id)
        if ship is None:
            return not_found(shipment_id)
        try:
            status = (await request.json()).get("status")
        except (ValueError, AttributeError):
            status = None
        if status not in STATUSES:
            return invalid(f"status must be one of {', '.join(STATUSES)}", "status")
        sim.change(ship, status)
        return JSONResponse(ship.public(events=True))

    @app.post("/_sim/reset")
    async def reset() -> dict[str, Any]:
        """Forget every shipment and count, and go back to the switches given at start."""
        sim.reset()
        return sim.stats()

    return app


def run(
    host: str,
    port: int,
    *,
    api_key: str,
    webhook_secret: str,
    switches: BobsPostSwitches,
    webhook_senders: int = WEBHOOK_SENDERS,
) -> None:
    """Serve the simulator with uvicorn until interrupted (`orderflow sim bobs-post`)."""
    app = create_app(
        api_key=api_key,
        webhook_secret=webhook_secret,
        switches=switches,
        webhook_senders=webhook_senders,
    )
    uvicorn.run(app, host=host, port=port, log_level="info")
