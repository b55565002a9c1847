"""What the API accepts at its edge: ids, order references, text, timestamps.

Every value from a URL or a body is checked here, before it reaches a query: an id outside
the database's 64-bit range, a NUL byte (PostgreSQL text cannot hold one), or a timestamp
that cannot be placed in UTC is a 404 or a 422, never a database error.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator

from orderflow.db import MAX_ID as MAX_ID
from orderflow.errors import NotFound
from orderflow.orders.models import parse_order_id

NO_NUL = r"^[^\x00]*$"  # a pattern for every free-text parameter


def parse_id(text: str | None) -> int | None:
    """`text` as an id of ours (1 … 2**63-1), or None if it cannot be one."""
    text = (text or "").strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None


def known_id(value: int, what: str) -> int:
    """An id from a path; one that no row can have is an unknown id (404)."""
    if not 1 <= value <= MAX_ID:
        raise NotFound(f"no {what} with id {value}")
    return value


def order_id_of(ref: str) -> int:
    """The order a path names by id (`123`) or by reference (`ORD-000123`); 404 otherwise."""
    order_id = parse_order_id(ref)
    if order_id is None:
        shown = ref if len(ref) <= 40 else ref[:40] + "…"
        raise NotFound(f"no order {shown!r}")
    return order_id


# `{order_id}` in every order path: the id (123) or the reference (ORD-000123).
OrderRef = Annotated[
    str,
    Path(
        description="the order's id (`123`) or its reference (`ORD-000123`)",
        examples=["ORD-000123"],
    ),
]


def _utc(value: datetime) -> datetime:
    """A timestamp without an offset is taken as UTC (the API's clock); all come back aware."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the timestamp is out of range once converted to UTC") from None


UtcDateTime = Annotated[datetime, AfterValidator(_utc)]
UTC_DESCRIPTION = "ISO 8601; without an offset it is taken as UTC"
