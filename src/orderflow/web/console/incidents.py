"""The incidents page: open and resolved incidents, and what was sent to whom about each."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from orderflow.alerts.history import counts, incidents_view
from orderflow.web.console.rendering import PREFIX, render
from orderflow.web.console.sessions import User
from orderflow.web.context import Context

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("/incidents")
def incidents(request: Request, ctx: Context, _: User) -> Response:
    with ctx.db.read() as session:
        found = incidents_view(session)
        totals = counts(session)
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
            "refresh": True,
        },
    )
