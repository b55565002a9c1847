"""Request bodies of the JSON API: validated here, so use cases only see well-formed input."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
]
Country = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Sku = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AddressIn(Strict):
    line1: Text
    line2: Annotated[str, StringConstraints(max_length=200)] | None = None
    city: Text
    postcode: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20)]
    country: Country


class CustomerIn(Strict):
    name: Text
    email: Email
    phone: Annotated[str, StringConstraints(max_length=50)] | None = None
    address: AddressIn
    payment_method: Text


class ProductIn(Strict):
    sku: Sku
    name: Text
    price: int = Field(gt=0, le=100_000_000, description="minor units")
    currency: Currency
    weight_grams: int = Field(gt=0, le=1_000_000)
    stock: int = Field(ge=0, le=1_000_000_000)


class LineIn(Strict):
    sku: Sku
    quantity: int = Field(ge=1, le=10_000)


class OrderIn(Strict):
    customer_id: int = Field(ge=1)
    lines: list[LineIn] = Field(min_length=1, max_length=100)


IdempotencyKeyText = Annotated[str, StringConstraints(min_length=1, max_length=255)]
MAX_BATCH = 1000


class BatchOrderIn(OrderIn):
    """One order of `POST /orders/batch`: a single POST's body plus its Idempotency-Key."""

    idempotency_key: IdempotencyKeyText


class BatchIn(Strict):
    # Entries are validated one by one (BatchOrderIn), so one malformed order is refused alone.
    orders: list[Any] = Field(min_length=1, max_length=MAX_BATCH)


class CancelIn(Strict):
    reason: Annotated[str, StringConstraints(max_length=500)] = "cancelled by admin"


class OrderPatchIn(Strict):
    address: AddressIn
    reason: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)
    ] = "address corrected"


class DiscardIn(Strict):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class BulkRedriveIn(Strict):
    step: str | None = None
    cause: str | None = None
    dependency: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    dry_run: bool = False
    batch: int = Field(100, ge=1, le=1000)
    pace_seconds: float = Field(1.0, ge=0, le=3600)
