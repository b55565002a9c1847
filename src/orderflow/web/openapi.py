"""What the OpenAPI document says about errors and links (the routes declare, this describes).

Every route lists the statuses it can answer besides its success, each with the one JSON
error body the API uses (`{"error": {"code", "message", …}}`), so that a client generated
from /openapi.json knows them all; `links` say where a created thing can be read back.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict


class Problem(BaseModel):
    field: str
    message: str


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")  # e.g. the existing customer's `id` with a 409

    code: str
    message: str
    field: str | None = None
    problems: list[Problem] | None = None


class ErrorBody(BaseModel):
    """Every error answer of the API."""

    error: ErrorDetail


_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "integer"},
    }
}
_ERRORS: dict[int, dict[str, Any]] = {
    401: {
        "description": "no or bad bearer token",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    403: {"description": "your role may not do this"},
    404: {"description": "unknown id"},
    409: {"description": "conflict with the current state"},
    413: {"description": "the request body is over the size limit (ORDERFLOW_MAX_BODY_BYTES)"},
    422: {"description": "invalid input"},
    429: {"description": "intake is throttled (backpressure)", "headers": _RETRY_AFTER},
    503: {
        "description": "the service cannot take the request now (database busy or unreachable)",
        "headers": _RETRY_AFTER,
    },
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that can answer these error statuses."""
    return {status: {"model": ErrorBody, **_ERRORS[status]} for status in statuses}


# The usual sets: every /api/v1 route needs the token and a database connection.
READ = (401, 403, 503)
WRITE = (401, 403, 413, 422, 503)


def link(operation_ref: str, description: str, **parameters: str) -> dict[str, Any]:
    """An OpenAPI link to the operation at `operation_ref` (a JSON pointer into this document),
    its parameters taken from the answer (`$response.body#/id`)."""
    return {"operationRef": operation_ref, "description": description, "parameters": parameters}


def get_operation(path: str) -> str:
    """The JSON pointer of `GET path` in the document."""
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/get"


def success(
    status: int, description: str, *, links: dict[str, Any] | None = None
) -> dict[int | str, dict[str, Any]]:
    body: dict[str, Any] = {"description": description}
    if links:
        body["links"] = links
    return {status: body}


def install(app: FastAPI) -> None:
    """Generate the document once, with every 422 described by the API's own error body:
    FastAPI adds a 422 of its `HTTPValidationError` to any route with parameters, but the
    API answers validation errors with `ErrorBody` (web/errors.py)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _own_validation_errors(generate())  # generate() keeps it as app.openapi_schema
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _own_validation_errors(spec: dict[str, Any]) -> None:
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            invalid = operation.get("responses", {}).get("422")
            if invalid and "HTTPValidationError" in str(invalid):
                invalid.update(_ERRORS[422])
                invalid["content"] = {"application/json": {"schema": error}}
    schemas = spec.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
