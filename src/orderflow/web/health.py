"""/healthz (the process is up), /readyz (database reachable, schema current), /metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from orderflow.migrate import current_revision, head_revision
from orderflow.redaction import redact
from orderflow.web.context import Context

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus text format (unauthenticated, like the health checks: scrape it privately)."""
    registry = request.app.state.metrics
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


_NOT_READY = {
    "type": "object",
    "properties": {"status": {"const": "unavailable"}, "reason": {"type": "string"}},
    "required": ["status", "reason"],
}


@router.get(
    "/readyz",
    response_model=None,
    responses={
        503: {
            "description": "the database cannot be reached or its schema is not current",
            "content": {"application/json": {"schema": _NOT_READY}},
        }
    },
)
def readyz(ctx: Context) -> dict[str, Any] | JSONResponse:
    try:
        with ctx.db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        current = current_revision(ctx.db.engine)
    except Exception as exc:
        reason = redact(str(exc))[:200]
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
    if current != head_revision():
        reason = f"schema at {current}, need {head_revision()}"
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
    return {"status": "ready", "schema": current}
