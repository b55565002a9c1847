"""An intake message: its parsing, and the refusal that keeps a bad one's raw body (pure).

A message is a JSON object like one entry of `POST /orders/batch`:
`{"idempotency_key": "…", "customer_id": 42, "lines": [{"sku": "WIDGET", "quantity": 2}]}`,
checked by the same schema as the API's order body, so that a message is accepted or refused
exactly as `POST /orders` with that key and body would be.
"""

from __future__ import annotations

import hashlib
import json
from base64 import b64decode, b64encode
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import StringConstraints, ValidationError

from orderflow.orders.service import LineRequest
from orderflow.tasks.errors import ErrorClass
from orderflow.web.api.schemas import OrderIn

# No NUL: PostgreSQL text cannot hold it (an HTTP header cannot either).
IdempotencyKey = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\x00]+$")
]


class MessageIn(OrderIn):
    idempotency_key: IdempotencyKey


@dataclass(frozen=True)
class OrderMessage:
    idempotency_key: str
    customer_id: int
    lines: list[LineRequest]


@dataclass(frozen=True)
class Refusal:
    """Why a message cannot become an order, as the API would have answered it."""

    status: int  # the HTTP status POST /orders would answer: 422, 409
    code: str
    message: str
    error_class: ErrorClass

    @property
    def reason(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


def parse(body: bytes) -> OrderMessage | Refusal:
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        return Refusal(422, "unreadable", "the body is not UTF-8 text", ErrorClass.POISON)
    except json.JSONDecodeError as exc:
        # Without the position, so that one kind of broken body groups as one cause.
        return Refusal(422, "unreadable", f"the body is not JSON: {exc.msg}", ErrorClass.POISON)
    if not isinstance(data, dict):
        return Refusal(422, "invalid_request", "the body must be a JSON object", ErrorClass.POISON)
    try:
        msg = MessageIn.model_validate(data)
    except ValidationError as exc:
        return Refusal(422, "invalid_request", _describe(exc), ErrorClass.PERMANENT)
    return OrderMessage(
        idempotency_key=msg.idempotency_key,
        customer_id=msg.customer_id,
        lines=[LineRequest(sku=ln.sku, quantity=ln.quantity) for ln in msg.lines],
    )


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def dead_letter_key(body: bytes) -> str:
    """The dead letter's task key: the same message (a redelivery) is recorded once, while
    another body under the same idempotency key gets its own."""
    return f"intake:{hashlib.sha256(body).hexdigest()}"


def raw_payload(body: bytes, *, base64: bool = False) -> dict[str, Any]:
    """The raw body as the operator will see it: text, or base64 when it is not UTF-8."""
    if not base64:
        try:
            return {"raw": body.decode("utf-8"), "raw_encoding": "utf-8"}
        except UnicodeDecodeError:
            pass
    return {"raw": b64encode(body).decode("ascii"), "raw_encoding": "base64"}


def raw_body(payload: dict[str, Any]) -> bytes:
    """The bytes `raw_payload` kept (for a redrive)."""
    raw = str(payload.get("raw", ""))
    return b64decode(raw) if payload.get("raw_encoding") == "base64" else raw.encode()


def known_key(body: bytes) -> str | None:
    """The idempotency key of a message refused before parsing completed, when it has one."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    key = data.get("idempotency_key") if isinstance(data, dict) else None
    return key if isinstance(key, str) else None
