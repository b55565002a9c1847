"""Console pages that are not about one thing: the banner, style sheet, demo's mailbox, 404s."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import Response

from orderflow.web.console.rendering import PREFIX, STYLE_SHEET, not_found, render
from orderflow.web.console.sessions import User
from orderflow.web.context import Context

router = APIRouter(prefix=PREFIX, include_in_schema=False)
# The catch-all 404 page, included after every other console router.
fallback = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("/banner")
def banner(request: Request, _: User) -> Response:
    """The outage banner alone, for pages that do not follow themselves (see base.html)."""
    return render(request, "banner_only.html", {})


@router.get("/static/console.css")
def style_sheet() -> Response:
    """The style sheet (no login needed: the login page uses it too)."""
    headers = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
    return Response(STYLE_SHEET, media_type="text/css", headers=headers)


@router.get("/mailbox")
def mailbox(request: Request, ctx: Context, _: User) -> Response:
    messages = None
    if ctx.mailbox is not None:
        messages = sorted(ctx.mailbox.messages(), key=lambda m: m.received_at, reverse=True)
    smtp = urlsplit(ctx.settings.smtp_url or "")
    smtp_server = f"{smtp.hostname}:{smtp.port}" if smtp.hostname and smtp.port else None
    return render(
        request,
        "mailbox.html",
        {"messages": messages, "smtp_server": smtp_server, "refresh": messages is not None},
    )


@fallback.get("/{rest:path}")
def unknown_page(request: Request, _: User, rest: str) -> Response:
    return not_found(request, "There is no such page in the console.")
