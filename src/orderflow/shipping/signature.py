"""Bob's Post webhook signatures: `X-BobsPost-Signature: t=<unix>,v1=<hex HMAC-SHA256>`."""

from __future__ import annotations

import hashlib
import hmac
import re

HEADER = "X-BobsPost-Signature"
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # unix seconds: up to the year 33658
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")  # HMAC-SHA256 in hex


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
    parts = dict(p.strip().split("=", 1) for p in header.split(",") if "=" in p)
    stamp, given = parts.get("t", ""), parts.get("v1", "")
    # Checked before any arithmetic or comparison: a 401-digit `t` overflows a float, and
    # compare_digest refuses non-ASCII text.
    if not (_TIMESTAMP.fullmatch(stamp) and _HEX_DIGEST.fullmatch(given)):
        raise BadSignature("malformed signature header")
    timestamp = int(stamp)
    if abs(now - timestamp) > tolerance:
        raise BadSignature(f"timestamp {timestamp} is more than {tolerance:.0f}s from our clock")
    if not hmac.compare_digest(given.lower(), _digest(secret, timestamp, body)):
        raise BadSignature("signature does not match")
