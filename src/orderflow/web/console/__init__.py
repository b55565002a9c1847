"""The console (server-rendered pages) for named users: admin, support, viewer.

Every page lives under `/console` and needs a login with a user name and password. The session
is server-side (table `console_sessions`; the cookie holds a random key, the table its hash):
it ends after `ORDERFLOW_CONSOLE_SESSION_IDLE_SECONDS` without a request, at the latest
`ORDERFLOW_CONSOLE_SESSION_MAX_SECONDS` after login, at logout, and when the user is disabled.
Every form carries the session's CSRF token and must come from the console's own origin (Origin,
else Referer); the cookie is HttpOnly, SameSite=Strict, and Secure when configured or over
https. Pages carry a Content-Security-Policy with a per-response nonce: no other script runs.
The pages call the same use cases and read models as the JSON API; nothing here decides
anything about orders.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import Response

from orderflow.web.console import (
    dead_letters,
    demo,
    dependencies,
    home,
    incidents,
    orders,
    pages,
    sessions,
)
from orderflow.web.console.rendering import PREFIX, redirect, render
from orderflow.web.console.sessions import FormRefused, LoginRequired, NotAllowed


def install(app: FastAPI) -> None:
    """Mount the console's pages on the app."""

    @app.exception_handler(LoginRequired)
    async def login_required(_: Request, exc: LoginRequired) -> Response:
        return redirect(f"{PREFIX}/login?next={quote(exc.next_url, safe='/')}")

    @app.exception_handler(FormRefused)
    async def form_refused(request: Request, _: FormRefused) -> Response:
        message = (
            "This form did not come from this console's page, or the page is out of date. "
            "Reload the page and try again."
        )
        return render(request, "forbidden.html", {"message": message}, 403)

    @app.exception_handler(NotAllowed)
    async def not_allowed(request: Request, exc: NotAllowed) -> Response:
        return render(request, "forbidden.html", {"message": str(exc)}, 403)

    app.include_router(sessions.router)
    app.include_router(home.router)
    app.include_router(dependencies.router)
    app.include_router(incidents.router)
    app.include_router(demo.router)
    app.include_router(pages.router)
    app.include_router(orders.router)
    app.include_router(dead_letters.router)
    app.include_router(pages.fallback)
