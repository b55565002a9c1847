"""Shared by the API simulators: misbehaviour switches (outage, 429, 5xx, ambiguous) and helpers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import random
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError


@dataclass
class ChaosSwitches:
    """Switches common to every API simulator; all of them may change while it runs."""

    outage: Literal["503", "hang"] | None = None  # "hang": sleep `hang_seconds`, then 503
    hang_seconds: float = 30.0
    rate_limit_per_second: int = 50  # token bucket per API key; above it 429 + Retry-After
    error_rate: float = 0.0  # fraction of requests answered 500/502/503 before doing anything
    ambiguous_rate: float = 0.0  # fraction of writes that DO the work, then answer 504 (or hang)
    ambiguous_mode: Literal["504", "hang"] = "504"
    latency_seconds: float = 0.0  # every answer is this much slower ("slow", not "down")
    seed: int | None = None


def utc_now() -> str:
    """Now as UTC ISO 8601 with milliseconds and a `Z`, the way both APIs write timestamps."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fingerprint(body: Any) -> str:
    """A canonical form of a JSON body, to tell a replay from a reused idempotency key."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def first_error(exc: ValidationError) -> tuple[str, str]:
    """(message, field path like `recipient.address.country` or `parcels[0].weight_grams`)."""
    err = exc.errors()[0]
    path = ""
    for part in err["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return str(err["msg"]), path or "body"


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """`{"error": {"code", "message", …}}`, the error envelope both APIs use."""
    return {"error": {"code": code, "message": message, **extra}}


REQUEST_LOG_SIZE = 200_000  # entries kept by `/_sim/requests` (the oldest go first)
_ID_SEGMENT = re.compile(r"^(\d+|[A-Za-z]+_[\w-]+)$")  # an id in a path: `bp_shp_8f3a…`, `42`


def request_kind(method: str, path: str, query: str) -> str:
    """`POST /v1/shipments`, `GET /v1/shipments/{id}`, `GET /v1/shipments?reference`: the
    request's method and route (ids replaced, query parameter names kept)."""
    route = "/".join("{id}" if _ID_SEGMENT.match(part) else part for part in path.split("/"))
    names = sorted({pair.split("=", 1)[0] for pair in query.split("&") if pair})
    return f"{method} {route}" + (f"?{'&'.join(names)}" if names else "")


class _Bucket:
    """A token bucket holding at most one second's worth of requests."""

    def __init__(self, rate: int) -> None:
        self.tokens = float(rate)
        self.stamp = time.monotonic()

    def take(self, rate: int) -> float:
        """Take a token and return 0, or return the seconds until one will be there."""
        now = time.monotonic()
        self.tokens = min(float(rate), self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / max(rate, 1)


class Chaos:
    """Applies a `ChaosSwitches` to every request under `prefix` and counts what was answered."""

    def __init__(self, switches: ChaosSwitches, prefix: str = "/v1") -> None:
        self.switches = switches
        self.initial = dataclasses.replace(switches)
        self.prefix = prefix
        self.rng = random.Random(switches.seed)
        self.requests = 0
        self.by_status: Counter[int] = Counter()
        self._buckets: dict[str, _Bucket] = {}
        # (unix time, kind, status) of every request under `prefix`, and of `note`s
        self.log: deque[tuple[float, str, int]] = deque(maxlen=REQUEST_LOG_SIZE)
        self.logged = 0

    def reset(self) -> None:
        """Back to the switches given at start, a re-seeded random source and zero counts."""
        self.update(dataclasses.asdict(self.initial))
        self.requests = 0
        self.by_status.clear()
        self._buckets.clear()
        self.log.clear()
        self.logged = 0

    def note(self, kind: str, status: int = 0) -> None:
        """Add to the request log: a request answered, or a simulator's own event (a handler
        sets `request.state.sim_event`, e.g. `booked`: logged just before its answer)."""
        self.log.append((time.time(), kind, status))
        self.logged += 1

    def requests_since(self, since: float) -> dict[str, Any]:
        """The request log from unix time `since` on; `dropped`: entries pushed out so far."""
        entries = [[round(t, 4), kind, status] for t, kind, status in self.log if t >= since]
        return {"requests": entries, "dropped": self.logged - len(self.log)}

    def update(self, changes: dict[str, Any]) -> None:
        """Validate and apply a partial change of switches (raises ValueError when invalid)."""
        names = {f.name for f in dataclasses.fields(self.switches)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown switches: {', '.join(unknown)}")
        merged = {**dataclasses.asdict(self.switches), **changes}
        try:
            new = TypeAdapter(type(self.switches)).validate_python(merged)
        except ValidationError as exc:
            raise ValueError(str(exc)) from None
        for name, value in dataclasses.asdict(new).items():
            if name.endswith("_rate") and not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in names:
            setattr(self.switches, name, getattr(new, name))
        if "seed" in changes:
            self.rng.seed(self.switches.seed)

    def chance(self, rate: float) -> bool:
        """True with probability `rate`, from the (seedable) simulator random source."""
        return rate > 0 and self.rng.random() < rate

    def ambiguous(self) -> bool:
        """Whether this write should do its work and then answer as if it had failed."""
        return self.chance(self.switches.ambiguous_rate)

    async def ambiguous_response(self) -> JSONResponse:
        """The answer to a write that succeeded: a 504, or a hang and then a 504."""
        if self.switches.ambiguous_mode == "hang":
            await asyncio.sleep(self.switches.hang_seconds)
        return JSONResponse(error_body("gateway_timeout", "upstream timed out"), status_code=504)

    async def _gate(self, request: Request) -> Response | None:
        s = self.switches
        if s.latency_seconds > 0:
            await asyncio.sleep(s.latency_seconds)
        if s.outage is not None:
            if s.outage == "hang":
                await asyncio.sleep(s.hang_seconds)
            return JSONResponse(error_body("unavailable", "service unavailable"), status_code=503)
        key = request.headers.get("authorization", "")
        bucket = self._buckets.setdefault(key, _Bucket(s.rate_limit_per_second))
        wait = bucket.take(s.rate_limit_per_second)
        if wait > 0:
            return JSONResponse(
                error_body("rate_limited", f"more than {s.rate_limit_per_second} requests/s"),
                status_code=429,
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        if self.chance(s.error_rate):
            status = self.rng.choice([500, 502, 503])
            return JSONResponse(error_body("server_error", "internal error"), status_code=status)
        return None

    async def middleware(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """The HTTP middleware: misbehave first, then count the status answered."""
        if not request.url.path.startswith(self.prefix):
            return await call_next(request)
        self.requests += 1
        response = await self._gate(request)
        if response is None:
            response = await call_next(request)
        self.by_status[response.status_code] += 1
        event = getattr(request.state, "sim_event", None)  # e.g. `booked`, set by the handler
        if event is not None:
            self.note(str(event))
        self.note(
            request_kind(request.method, request.url.path, request.url.query), response.status_code
        )
        return response

    def stats(self) -> dict[str, Any]:
        """`requests` and `requests_by_status` (status codes as strings, JSON-style)."""
        by_status = {str(code): n for code, n in sorted(self.by_status.items())}
        return {"requests": self.requests, "requests_by_status": by_status}

    def install(self, app: FastAPI) -> None:
        """Add the middleware and the `GET`/`PATCH /_sim/switches` routes to `app`."""
        app.middleware("http")(self.middleware)

        @app.get("/_sim/switches")
        async def get_switches() -> dict[str, Any]:
            return dataclasses.asdict(self.switches)

        @app.get("/_sim/requests")
        async def get_requests(since: float = Query(0.0)) -> dict[str, Any]:
            """The request log (read-only): `[[unix time, kind, status], …]` from `since` on."""
            return self.requests_since(since)

        @app.patch("/_sim/switches", response_model=None)
        async def patch_switches(request: Request) -> dict[str, Any] | JSONResponse:
            try:
                changes = await request.json()
                if not isinstance(changes, dict):
                    raise ValueError("expected a JSON object")
                self.update(changes)
            except ValueError as exc:
                return JSONResponse(error_body("invalid_switches", str(exc)), status_code=422)
            return dataclasses.asdict(self.switches)
