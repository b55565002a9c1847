"""Every error answer is JSON `{"error": {"code", "message"}}` with an honest status."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from orderflow.errors import DomainError
from orderflow.orders.status import IllegalTransition
from orderflow.web.context import Unauthorized

log = structlog.get_logger("orderflow.web")


def error_response(
    status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, **extra}}
    return JSONResponse(body, status_code=status, headers=headers)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc if p not in ("body", "query", "path", "header"))


def error_body(exc: DomainError) -> dict[str, Any]:
    """The `error` object of a refused request (also one entry of a batch's results)."""
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.field:
        body["field"] = exc.field
    body.update((k, v) for k, v in exc.details.items() if k not in body)
    return body


def validation_error_body(errors: Sequence[Any]) -> dict[str, Any]:
    """The `error` object of a body that failed validation (pydantic's errors)."""
    problems = [{"field": _field(e.get("loc", ())), "message": e.get("msg", "")} for e in errors]
    first = problems[0] if problems else {"field": "", "message": "invalid request"}
    where = f"{first['field']}: " if first["field"] else ""
    return {
        "code": "invalid_request",
        "message": f"{where}{first['message']}",
        "problems": problems,
    }


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain(_: Request, exc: DomainError) -> JSONResponse:
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return JSONResponse({"error": error_body(exc)}, exc.status_code, headers=headers)

    # Overload is answered at once and honestly, and as a handled error: Starlette closes
    # the keep-alive connection after a 500 (an unhandled exception), not after these.
    @app.exception_handler(PoolTimeout)
    async def pool_busy(request: Request, _: PoolTimeout) -> JSONResponse:
        log.warning("web.db_pool_busy", path=request.url.path)
        return error_response(
            503,
            "busy",
            "the service is busy (no database connection free); try again shortly",
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(OperationalError)
    async def db_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        log.warning("web.db_unavailable", path=request.url.path, error=str(exc.orig))
        return error_response(
            503,
            "unavailable",
            "the database cannot be reached or is busy; try again shortly",
            headers={"Retry-After": "2"},
        )

    # Input is checked at the edge (web/params.py, api/schemas.py); should a value the database
    # cannot take still get through (SQLSTATE class 22: out of range, NUL, too long), it is the
    # client's input all the same: a 422, logged so that the missing check gets added.
    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError) -> JSONResponse:
        log.warning("web.data_error", path=request.url.path, error=str(exc.orig)[:300])
        return error_response(
            422, "invalid_value", "a value in the request cannot be stored or compared"
        )

    @app.exception_handler(IllegalTransition)
    async def illegal(_: Request, exc: IllegalTransition) -> JSONResponse:
        return error_response(409, "illegal_transition", str(exc))

    @app.exception_handler(Unauthorized)
    async def unauthorized(_: Request, __: Unauthorized) -> JSONResponse:
        return error_response(
            401,
            "unauthorized",
            "a valid bearer token is required (the admin token or a personal token)",
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": validation_error_body(exc.errors())}, 422)

    @app.exception_handler(HTTPException)
    async def http(_: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not parse the body (e.g. not UTF-8)
            return error_response(422, "invalid_request", f"unreadable body: {exc.detail}")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("web.unhandled", path=request.url.path)
        return error_response(500, "internal_error", "an unexpected error occurred; it is logged")
