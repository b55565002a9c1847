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

import json
import re
import secrets
import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from orderflow.catalog import service as catalog
from orderflow.catalog.models import Customer
from orderflow.clock import now
from orderflow.config import Settings
from orderflow.errors import Conflict, DomainError, Invalid, NotFound
from orderflow.orders import queries, service
from orderflow.orders.models import parse_order_reference
from orderflow.orders.service import LineRequest
from orderflow.orders.status import CANCELLABLE, TERMINAL, OrderStatus
from orderflow.people import four_eyes
from orderflow.people import service as people
from orderflow.people.roles import Role
from orderflow.people.service import LoggedIn
from orderflow.web.context import AppContext, Context
from orderflow.web.params import MAX_ID, parse_id

PREFIX = "/console"
COOKIE = "orderflow_console"
REFRESH_SECONDS = 2
LINE_SLOTS = 3
STATUSES = [s.value for s in OrderStatus]
HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
# Scripts run only with the response's nonce (no inline handlers); style only from the console's
# style sheet (no inline style); the refresh script fetches this origin only.
CSP = (
    "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
STYLE_SHEET = (Path(__file__).parent / "static" / "console.css").read_bytes()


# --- presentation helpers (Jinja filters) --------------------------------------------------

CURRENCY_SYMBOLS = {"GBP": "£", "EUR": "€", "USD": "$"}
CURRENCY_EXPONENTS = {"JPY": 0, "KRW": 0}


def money(amount: int | None, currency: str | None) -> str:
    """Minor units as people read them: 2598, "GBP" → "£25.98"."""
    if amount is None:
        return "—"
    code = (currency or "").upper()
    exponent = CURRENCY_EXPONENTS.get(code, 2)
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(amount), 10**exponent)
    number = f"{major:,}" + (f".{minor:0{exponent}d}" if exponent else "")
    symbol = CURRENCY_SYMBOLS.get(code)
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {code}".rstrip()


def _parse_time(value: datetime | str | None) -> datetime | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def when(value: datetime | str | None) -> str:
    """An ISO timestamp as "2024-05-01 12:34:56 UTC"."""
    moment = _parse_time(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def relative(value: datetime | str | None) -> str:
    """How far a moment is from now: "in 3 s", "2 min ago"."""
    moment = _parse_time(value)
    if moment is None:
        return ""
    seconds = int((moment - now()).total_seconds())
    amount = abs(seconds)
    if amount < 1:
        return "now"
    if amount < 90:
        span = f"{amount} s"
    elif amount < 90 * 60:
        span = f"{round(amount / 60)} min"
    elif amount < 36 * 3600:
        span = f"{round(amount / 3600)} h"
    else:
        span = f"{round(amount / 86400)} days"
    return f"in {span}" if seconds > 0 else f"{span} ago"


def details(value: Any) -> list[tuple[str, str]]:
    """A history entry's details as (key, readable value) pairs."""
    if not value:
        return []
    if not isinstance(value, dict):
        return [("", str(value))]
    pairs = []
    for key, item in value.items():
        if item is None:
            continue
        text = item if isinstance(item, str) else json.dumps(item, separators=(", ", ": "))
        pairs.append((str(key), text))
    return pairs


def label(value: Any) -> str:
    """A status or step for humans: "payment_failed" → "payment failed"."""
    return str(value or "").replace("_", " ")


ORDER_REFERENCE = re.compile(r"\bORD-(\d{6,})\b")


def order_link(subject: str) -> str | None:
    match = ORDER_REFERENCE.search(subject or "")
    return f"{PREFIX}/orders/{int(match.group(1))}" if match else None


templates.env.filters.update(
    money=money, when=when, relative=relative, details=details, label=label
)
templates.env.globals.update(
    prefix=PREFIX,
    statuses=STATUSES,
    refresh_seconds=REFRESH_SECONDS,
    order_link=order_link,
)


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    """A page, with the logged-in user (if any) for the navigation, CSRF token and CSP nonce."""
    user: LoggedIn | None = getattr(request.state, "console_user", None)
    nonce = secrets.token_urlsafe(16)
    extra = {
        "user": user,
        "csrf_token": user.csrf_token if user else "",
        "can_admin": bool(user and user.who.can(Role.ADMIN)),
        "csp_nonce": nonce,
    }
    response = templates.TemplateResponse(
        request, name, {**extra, **context}, status_code=status_code
    )
    response.headers.update(HEADERS)
    response.headers["Content-Security-Policy"] = CSP.format(nonce=nonce)
    return response


def redirect(url: str) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303, headers=HEADERS)
    response.headers["Content-Security-Policy"] = "default-src 'none'; frame-ancestors 'none'"
    return response


# --- sessions, origin and CSRF -------------------------------------------------------------------


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
    if parts.path.rstrip("/") in (f"{PREFIX}/login", f"{PREFIX}/logout", PREFIX):
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


# --- pages ---------------------------------------------------------------------------------

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("")
@router.get("/")
def home(_: User) -> Response:
    return redirect(f"{PREFIX}/orders")


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


def _forbid(user: LoggedIn, doing: str) -> None:
    if not user.who.can(Role.ADMIN):
        raise NotAllowed(f"Your role ({user.who.role}) cannot {doing}; an admin can.")


@router.get("/orders")
def orders(
    request: Request,
    ctx: Context,
    _: User,
    status: str | None = None,
    before: str | None = None,
) -> Response:
    chosen = status if status in STATUSES else None
    cursor = parse_id(before)
    with ctx.db.read() as session:
        rows, next_before = queries.list_orders(session, status=chosen, before=cursor, limit=50)
        ids = {row["customer_id"] for row in rows}
        found = session.scalars(select(Customer).where(Customer.id.in_(ids)))
        names = {c.id: (c.name, c.email) for c in found}
    return render(
        request,
        "orders.html",
        {
            "orders": rows,
            "customers": names,
            "status": chosen,
            "before": cursor,
            "next_before": next_before,
            "refresh": True,
        },
    )


def _customers_and_products(ctx: AppContext, q: str | None) -> dict[str, Any]:
    with ctx.db.read() as session:
        customers = [
            {"id": c.id, "name": c.name, "email": c.email, "reference": c.reference}
            for c in catalog.search_customers(session, q or None, limit=200)
        ]
        products = [
            {
                "sku": p.sku,
                "name": p.name,
                "price": p.price,
                "currency": p.currency,
                "stock": p.stock,
            }
            for p in catalog.list_products(session)
        ]
    return {"customers": customers, "products": products}


def _new_order_form(
    request: Request,
    ctx: Context,
    *,
    q: str | None = None,
    customer_id: str = "",
    lines: list[tuple[str, str]] | None = None,
    idempotency_key: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    rows = list(lines or [])
    rows += [("", "")] * max(LINE_SLOTS - len(rows), 0)
    return render(
        request,
        "new_order.html",
        {
            **_customers_and_products(ctx, q),
            "q": q or "",
            "customer_id": customer_id,
            "lines": rows,
            "idempotency_key": idempotency_key or str(uuid.uuid4()),
            "error": error,
        },
        status_code,
    )


@router.get("/orders/new")
def new_order(request: Request, ctx: Context, user: User, q: str | None = None) -> Response:
    _forbid(user, "place orders")
    return _new_order_form(request, ctx, q=q)


def _parse_lines(skus: list[str], quantities: list[str]) -> list[LineRequest]:
    """The filled line slots (a slot without a product is ignored)."""
    lines = []
    for sku, quantity in zip(skus, quantities + [""] * len(skus), strict=False):
        sku, quantity = sku.strip(), quantity.strip()
        if not sku:
            continue
        if not quantity:
            raise Invalid(f"enter a quantity for {sku}", field="lines")
        try:
            number = int(quantity)
        except ValueError:
            raise Invalid(f"the quantity of {sku} must be a whole number", field="lines") from None
        lines.append(LineRequest(sku=sku, quantity=number))
    return lines


@router.post("/orders/new")
def place_order(
    request: Request,
    ctx: Context,
    user: Poster,
    customer_id: Annotated[str, Form()] = "",
    sku: Annotated[list[str], Form()] = [],  # noqa: B006 (FastAPI copies defaults)
    quantity: Annotated[list[str], Form()] = [],  # noqa: B006
    idempotency_key: Annotated[str, Form()] = "",
) -> Response:
    _forbid(user, "place orders")
    key = idempotency_key.strip() or None
    entered = list(zip(sku, quantity + [""] * len(sku), strict=False))
    filled = [(s, q) for s, q in entered if s.strip() or q.strip()]
    try:
        if key is not None and len(key) > 255:
            raise Invalid("the form's Idempotency-Key is too long; reload the page")
        if parse_id(customer_id) is None:
            raise Invalid("choose a customer", field="customer_id")
        lines = _parse_lines(sku, quantity)
        for attempt in (1, 2):
            try:
                with ctx.db.transaction() as session:
                    order, created = service.place_order(
                        session,
                        customer_id=int(customer_id),
                        lines=lines,
                        actor=user.who.actor,
                        idempotency_key=key,
                    )
                    order_id = order.id
                break
            except IntegrityError:
                # A concurrent submit of the same form won the race; the retry finds its order.
                if key is None or attempt == 2:
                    raise
    except (Invalid, Conflict, NotFound) as exc:
        message = _sentence(exc.message)
        if exc.code == "idempotency_key_reused":
            key = None  # a fresh form: this one already placed an order with other lines
            message = (
                "This form was already used to place an order with other lines. Check the "
                "orders list; submitting this form again places a new order."
            )
        return _new_order_form(
            request,
            ctx,
            customer_id=customer_id,
            lines=filled,
            idempotency_key=key,
            error=message,
            status_code=exc.status_code,
        )
    notice = "placed" if created else "already-placed"
    return redirect(f"{PREFIX}/orders/{order_id}?notice={notice}")


def _sentence(message: str) -> str:
    message = message.strip()
    if not message:
        return message
    message = message[0].upper() + message[1:]
    return message if message.endswith((".", "!", "?")) else message + "."


NOTICES = {
    "placed": "Order placed. Payment is under way; this page follows it.",
    "already-placed": "This form had already placed this order; nothing new was created.",
    "cancelled": "Order cancelled. Stock is released.",
    "proposed": "Cancellation and refund proposed: another admin must approve it.",
    "approved": "Approved: the action has been carried out.",
    "rejected": "Proposal closed: nothing was done.",
}


def _order_id(value: str) -> int | None:
    """An order's id, or its reference (ORD-000123); None if no order can have it."""
    order_id = parse_id(value)
    if order_id is None:
        order_id = parse_order_reference(value.strip().upper())
    return order_id if order_id is not None and order_id <= MAX_ID else None


def _order_page(
    request: Request,
    ctx: AppContext,
    order_ref: str,
    *,
    notice: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    order_id = _order_id(order_ref)
    try:
        if order_id is None:
            raise NotFound(f"no order {order_ref}")
        with ctx.db.read() as session:
            order = queries.order_view(session, order_id)
            charged = service.charged_payment(session, order_id) is not None
            pending = four_eyes.listing(session, order_id=order_id)
    except NotFound:
        return not_found(request, f"There is no order {order_ref}.")
    status = OrderStatus(order["status"])
    return render(
        request,
        "order.html",
        {
            "order": order,
            "notice": NOTICES.get(notice or ""),
            "error": error,
            "cancellable": status in CANCELLABLE,
            "charged": charged,
            "proposals": pending,
            "terminal": status in TERMINAL,
            "refresh": status not in TERMINAL,
        },
        status_code,
    )


@router.get("/orders/{order_ref}")
def order_page(
    request: Request, ctx: Context, _: User, order_ref: str, notice: str | None = None
) -> Response:
    return _order_page(request, ctx, order_ref, notice=notice)


@router.post("/orders/{order_ref}/cancel")
def cancel_order(
    request: Request,
    ctx: Context,
    user: Poster,
    order_ref: str,
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Cancel; if the card was charged, propose it instead (a refund needs a second person)."""
    _forbid(user, "cancel orders")
    order_id = _order_id(order_ref)
    if order_id is None:
        return not_found(request, f"There is no order {order_ref}.")
    why = reason.strip()[:500] or f"cancelled by {user.name}"
    try:
        with ctx.db.transaction() as session:
            refund = four_eyes.is_refund(session, order_id)
            if refund:
                params = {"order_id": order_id}
                four_eyes.propose(session, user.who, four_eyes.REFUND, params, why)
            else:
                service.cancel_order(session, order_id, actor=user.who.actor, reason=why)
    except NotFound:
        return not_found(request, f"There is no order {order_ref}.")
    except DomainError as exc:
        return _order_page(
            request,
            ctx,
            order_ref,
            error=f"Not cancelled: {exc.message}.",
            status_code=exc.status_code,
        )
    return redirect(f"{PREFIX}/orders/{order_id}?notice={'proposed' if refund else 'cancelled'}")


@router.post("/orders/{order_ref}/proposals/{proposal_id}/{decision}")
def decide(
    request: Request,
    ctx: Context,
    user: Poster,
    order_ref: str,
    proposal_id: int,
    decision: str,
) -> Response:
    """The second person approves (the action runs now), or anyone admin rejects/withdraws."""
    _forbid(user, "decide on proposals")
    if decision not in ("approve", "reject"):
        return not_found(request, "There is no such page in the console.")
    try:
        if decision == "approve":
            four_eyes.approve_and_run(ctx.db, user.who, proposal_id)
        else:
            with ctx.db.transaction() as session:
                four_eyes.reject(session, user.who, proposal_id)
    except DomainError as exc:
        return _order_page(
            request, ctx, order_ref, error=_sentence(exc.message), status_code=exc.status_code
        )
    notice = "approved" if decision == "approve" else "rejected"
    return redirect(f"{PREFIX}/orders/{order_ref}?notice={notice}")


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


def not_found(request: Request, message: str) -> Response:
    return render(request, "not_found.html", {"message": message}, 404)


@router.get("/{rest:path}")
def unknown_page(request: Request, _: User, rest: str) -> Response:
    return not_found(request, "There is no such page in the console.")


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

    app.include_router(router)
