"""Request bodies of the JSON API: validated here, so use cases only see well-formed input."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
)

from orderflow.catalog.emails import MAX_LENGTH as EMAIL_MAX_LENGTH
from orderflow.catalog.emails import normalized_email
from orderflow.payments.currencies import PAYDESK_CURRENCIES, supported_currency
from orderflow.web.params import MAX_ID, NO_NUL, UtcDateTime

# Free text never holds a NUL (PostgreSQL text cannot store one); numbers are JSON numbers
# (`true`, `"1"` and `1.0` are not a quantity): Strict* below.
Text = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NO_NUL)
]
Line2 = Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL)]
Phone = Annotated[str, StringConstraints(max_length=50, pattern=NO_NUL)]
FilterText = Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL)]
# A dead letter's cause as the API lists it (step · class · the error's first 300 characters).
CauseText = Annotated[str, StringConstraints(max_length=500, pattern=NO_NUL)]
Reason = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500, pattern=NO_NUL)
]


Email = Annotated[
    str,
    StringConstraints(max_length=EMAIL_MAX_LENGTH),
    AfterValidator(normalized_email),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": EMAIL_MAX_LENGTH}),
]
Country = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
Currency = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z]{3}$"),
    AfterValidator(supported_currency),
    WithJsonSchema(
        {
            "type": "string",
            "enum": sorted(PAYDESK_CURRENCIES),
            "description": "a currency the payment gateway (Paydesk) charges in",
        }
    ),
]
SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
Sku = Annotated[str, StringConstraints(pattern=SKU_PATTERN)]
Id = Annotated[StrictInt, Field(ge=1, le=MAX_ID)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AddressIn(Strict):
    line1: Text
    line2: Line2 | None = None
    city: Text
    postcode: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20, pattern=NO_NUL)
    ]
    country: Country


class CustomerIn(Strict):
    name: Text
    email: Email
    phone: Phone | None = None
    address: AddressIn
    payment_method: Text


class ProductIn(Strict):
    sku: Sku
    name: Text
    price: StrictInt = Field(gt=0, le=100_000_000, description="minor units")
    currency: Currency
    weight_grams: StrictInt = Field(gt=0, le=1_000_000)
    stock: StrictInt = Field(ge=0, le=1_000_000_000)


class LineIn(Strict):
    sku: Sku
    quantity: StrictInt = Field(ge=1, le=10_000)


class OrderIn(Strict):
    customer_id: Id
    lines: list[LineIn] = Field(min_length=1, max_length=100)


IdempotencyKeyText = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\x00]+$")
]
MAX_BATCH = 1000


class BatchOrderIn(OrderIn):
    """One order of `POST /orders/batch`: a single POST's body plus its Idempotency-Key."""

    idempotency_key: IdempotencyKeyText


class BatchIn(Strict):
    # Entries are validated one by one (BatchOrderIn), so one malformed order is refused alone.
    orders: list[Any] = Field(min_length=1, max_length=MAX_BATCH)


class CancelIn(Strict):
    reason: Annotated[str, StringConstraints(max_length=500, pattern=NO_NUL)] = "cancelled by admin"


class ResendIn(Strict):
    reason: Annotated[str, StringConstraints(max_length=500, pattern=NO_NUL)] = "parcel re-sent"


class OrderPatchIn(Strict):
    address: AddressIn
    reason: Reason = "address corrected"


class DiscardIn(Strict):
    reason: Reason


class BulkRedriveIn(Strict):
    step: FilterText | None = None
    cause: CauseText | None = None
    dependency: FilterText | None = None
    since: UtcDateTime | None = None
    until: UtcDateTime | None = None
    dry_run: StrictBool = False
    batch: StrictInt = Field(100, ge=1, le=1000)
    pace_seconds: StrictFloat = Field(1.0, ge=0, le=3600)
