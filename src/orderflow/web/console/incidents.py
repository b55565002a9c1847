"""The incidents page: open and resolved incidents, and what was sent to whom about each."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from orderflow.alerts.history import counts, incidents_view
from orderflow.web.console.rendering import PREFIX, render
from orderflow.web.console.sessions import User
from orderflow.web.context import Context
from orderflow.web.params import parse_id

router = APIRouter(prefix=PREFIX, include_in_schema=False)


PAGE = 50


@router.get("/incidents")
def incidents(request: Request, ctx: Context, _: User, before: str | None = None) -> Response:
    cursor = parse_id(before)  # anything that cannot be an id: the first page
    with ctx.db.read() as session:
        found = incidents_view(session, limit=PAGE + 1, before=cursor)
        totals = counts(session)
    more = len(found) > PAGE
    found = found[:PAGE]
    settings = ctx.settings
    return render(
        request,
        "incidents.html",
        {
            "section": "incidents",
            "incidents": found,
            "totals": totals,
            "slack_configured": bool(settings.slack_webhook_url),
            "logistics_email": settings.logistics_email,
            "before": cursor,
            "next_before": found[-1]["id"] if more and found[-1]["resolved_at"] else None,
            "refresh": cursor is None,  # older pages do not change
        },
    )
