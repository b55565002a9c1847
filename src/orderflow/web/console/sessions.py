"""Console sessions: login and logout, the session cookie, same-origin and CSRF checks, roles."""

from __future__ import annotations

import secrets
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from orderflow.config import Settings
from orderflow.people import service as people
from orderflow.people.roles import Role
from orderflow.people.service import LoggedIn
from orderflow.web.console.rendering import PREFIX, redirect, render
from orderflow.web.context import AppContext, Context

COOKIE = "orderflow_console"


class LoginRequired(Exception):
    """Raised by the login dependencies; answered with a redirect to the login page."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


class FormRefused(Exception):
    """A form posted from another origin, or without this session's CSRF token: 403."""


class NotAllowed(Exception):
    """The user's role does not allow this page or action: a 403 page."""


def _forwarded(request: Request, header: str) -> str | None:
    value = request.headers.get(header)
    return value.split(",")[0].strip().lower() if value else None


def secure_request(request: Request, settings: Settings) -> bool:
    """Whether the browser reached us over https (directly, or through a trusted proxy)."""
    if request.url.scheme == "https":
        return True
    return settings.trust_proxy_headers and _forwarded(request, "x-forwarded-proto") == "https"


def own_origin(request: Request, settings: Settings) -> str:
    scheme = "https" if secure_request(request, settings) else request.url.scheme
    host = request.headers.get("host", "")
    if settings.trust_proxy_headers:
        host = _forwarded(request, "x-forwarded-host") or host
    return f"{scheme}://{host}".lower()


def same_origin(request: Request, settings: Settings) -> bool:
    """The form was posted by a page of this console: Origin (else Referer) is ours."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        referer = urlsplit(request.headers.get("referer", ""))
        if not referer.scheme or not referer.netloc:
            return False
        origin = f"{referer.scheme}://{referer.netloc}"
    return origin.lower() == own_origin(request, settings)


def _session_user(ctx: AppContext, key: str | None) -> LoggedIn | None:
    if not key:
        return None
    settings = ctx.settings
    with ctx.db.read() as session:
        found = people.session_user(
            session,
            key,
            idle_seconds=settings.console_session_idle_seconds,
            max_seconds=settings.console_session_max_seconds,
        )
    if found is not None and found.stale:
        with ctx.db.transaction() as session:
            people.touch_session(session, found.session_id)
    return found


def require_login(request: Request, ctx: Context) -> LoggedIn:
    """The logged-in user; anyone else is sent to the login page."""
    user = _session_user(ctx, request.cookies.get(COOKIE))
    if user is None:
        if request.method != "GET":  # a form posted after the session ended: start afresh
            raise LoginRequired(f"{PREFIX}/orders")
        query = f"?{request.url.query}" if request.url.query else ""
        raise LoginRequired(request.url.path + query)
    request.state.console_user = user
    return user


async def require_form(request: Request, ctx: Context) -> LoggedIn:
    """A form post: from our own origin, by a logged-in user, with their session's CSRF token."""
    if not same_origin(request, ctx.settings):
        raise FormRefused()
    user = await run_in_threadpool(require_login, request, ctx)
    form = await request.form()
    token = form.get("csrf_token")
    if not isinstance(token, str) or not secrets.compare_digest(
        token.encode("utf-8", "surrogateescape"), user.csrf_token.encode()
    ):
        raise FormRefused()
    return user


User = Annotated[LoggedIn, Depends(require_login)]
Poster = Annotated[LoggedIn, Depends(require_form)]


def safe_next(value: str | None) -> str:
    """Only ever send a freshly logged-in user to a console page (no open redirect)."""
    default = f"{PREFIX}/orders"
    if not value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith(PREFIX) or "\\" in value:
        return default
    if parts.path.rstrip("/") in (f"{PREFIX}/login", f"{PREFIX}/logout"):
        return default
    return value


def _set_cookie(response: Response, request: Request, settings: Settings, key: str) -> None:
    response.set_cookie(
        COOKIE,
        key,
        max_age=int(settings.console_session_max_seconds),
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=settings.secure_cookies or secure_request(request, settings),
    )


def user_can(request: Request, role: Role) -> bool:
    """Whether the page's logged-in user has at least this role (for showing buttons)."""
    user: LoggedIn | None = getattr(request.state, "console_user", None)
    return bool(user and user.who.can(role))


def forbid(user: LoggedIn, doing: str) -> None:
    """Only an admin may do this: anyone else gets a 403 page saying so."""
    if not user.who.can(Role.ADMIN):
        raise NotAllowed(f"Your role ({user.who.role}) cannot {doing}; an admin can.")


router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("/login")
def login_page(
    request: Request, ctx: Context, next: str | None = None, token: str | None = None
) -> Response:
    if _session_user(ctx, request.cookies.get(COOKIE)) is not None:
        return redirect(safe_next(next))
    notice = (
        "Links with a token no longer log in: enter your user name and password."
        if token is not None
        else None
    )
    return render(request, "login.html", {"error": None, "notice": notice, "next": next})


@router.post("/login")
def login(
    request: Request,
    ctx: Context,
    name: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    if not same_origin(request, ctx.settings):
        raise FormRefused()
    name = name.strip().lower()
    settings = ctx.settings
    with ctx.db.transaction() as session:
        who = people.authenticate(session, name, password) if name and password else None
        key = people.start_session(session, who) if who is not None else None
        if key is not None:  # sweep sessions that ended by themselves (idle or too old)
            people.forget_stale_sessions(
                session,
                idle_seconds=settings.console_session_idle_seconds,
                max_seconds=settings.console_session_max_seconds,
            )
    if key is None:
        message = (
            "That user name and password do not match."
            if name and password
            else "Enter your user name and password."
        )
        context = {"error": message, "notice": None, "next": next, "name": name}
        return render(request, "login.html", context, 401)
    response = redirect(safe_next(next))
    _set_cookie(response, request, settings, key.key)
    return response


@router.post("/logout")
def logout(request: Request, ctx: Context, _: Poster) -> Response:
    """Ends the session in the database: the cookie is worthless from now on."""
    with ctx.db.transaction() as session:
        people.end_session(session, request.cookies.get(COOKIE, ""))
    response = redirect(f"{PREFIX}/login")
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response
