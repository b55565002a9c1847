"""Bob's Post webhook signatures: `X-BobsPost-Signature: t=<unix>,v1=<hex HMAC-SHA256>`."""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-BobsPost-Signature"


class BadSignature(Exception):
    """Missing, malformed, wrong, or too far from our clock (a replay)."""


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The header value Bob's Post sends with `body` at `timestamp`."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def verify(secret: str, body: bytes, header: str | None, now: float, tolerance: float) -> None:
    if not header:
        raise BadSignature("missing signature header")
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        raise BadSignature("malformed signature header") from None
    if abs(now - timestamp) > tolerance:
        raise BadSignature(f"timestamp {timestamp} is more than {tolerance:.0f}s from our clock")
    if not hmac.compare_digest(given, _digest(secret, timestamp, body)):
        raise BadSignature("signature does not match")
