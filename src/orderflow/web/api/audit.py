"""An order's history and evidence: GET …/audit, …/investigation, …/dispute-bundle."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from orderflow.audit import bundle, investigation, signing
from orderflow.web.context import AppContext, Context, ReadSession, Support, Viewer
from orderflow.web.openapi import READ, errors
from orderflow.web.params import OrderRef, order_id_of

router = APIRouter(tags=["audit"])


def anchor_key(ctx: AppContext) -> bytes | None:
    """The anchor public key, when configured: verdicts then check anchors' signatures."""
    settings = ctx.settings
    return signing.public_key_for(
        settings.audit_anchor_public_key_file, settings.audit_anchor_key_file
    )


@router.get("/orders/{order_id}/audit", responses=errors(*READ, 404))
def order_audit(
    order_id: OrderRef, session: ReadSession, ctx: Context, _: Viewer
) -> dict[str, Any]:
    """The order's hash-chained entries as stored, and the integrity verdict."""
    return investigation.audit_view(session, order_id_of(order_id), anchor_key(ctx))


@router.get("/orders/{order_id}/investigation", responses=errors(*READ, 404))
def order_investigation(
    order_id: OrderRef, session: ReadSession, ctx: Context, _: Support
) -> dict[str, Any]:
    """Summary, plain-language timeline, integrity, failures, payments, carrier events, e-mails."""
    return investigation.investigation(session, order_id_of(order_id), anchor_key(ctx))


@router.get(
    "/orders/{order_id}/dispute-bundle",
    response_model=None,
    responses={
        200: {
            "description": "the bundle as JSON, or as an HTML page with `format=html`",
            "content": {"application/json": {}, "text/html": {"schema": {"type": "string"}}},
        },
        **errors(*READ, 404, 422),
    },
)
def dispute_bundle(
    order_id: OrderRef,
    session: ReadSession,
    ctx: Context,
    _: Support,
    format: str = Query("json", pattern="^(json|html)$"),
) -> dict[str, Any] | HTMLResponse:
    """The evidence bundle (JSON, checkable offline with verify_bundle.py) or its HTML page."""
    data = bundle.build(
        session,
        order_id_of(order_id),
        archive_dir=ctx.settings.audit_archive_dir,
        public_key=anchor_key(ctx),
    )
    if format == "html":
        return HTMLResponse(bundle.render_html(data))
    return data
