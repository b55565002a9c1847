"""The admin console (server-rendered pages).

Every page lives under `/console` and needs the admin token, exchanged once on the login page for
a signed, HttpOnly, SameSite=Strict cookie (SameSite=Strict is also what keeps other sites from
posting the console's forms). The pages call the same use cases and read models as the JSON API;
nothing here decides anything about orders.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from orderflow.catalog import service as catalog
from orderflow.catalog.models import Customer
from orderflow.clock import now
from orderflow.errors import Conflict, DomainError, Invalid, NotFound
from orderflow.orders import queries, service
from orderflow.orders.models import parse_order_reference
from orderflow.orders.service import LineRequest
from orderflow.orders.status import CANCELLABLE, TERMINAL, OrderStatus
from orderflow.web.context import AppContext, Context, token_matches
from orderflow.web.params import MAX_ID, parse_id

PREFIX = "/console"
COOKIE = "orderflow_console"
SESSION_SECONDS = 12 * 3600
ACTOR = "admin:console"
REFRESH_SECONDS = 2
LINE_SLOTS = 3
STATUSES = [s.value for s in OrderStatus]
HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


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
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers.update(HEADERS)
    return response


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=HEADERS)


# --- the session cookie --------------------------------------------------------------------


class LoginRequired(Exception):
    """Raised by the `admin` dependency; answered with a redirect to the login page."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


def _signature(ctx: AppContext, issued: str) -> str:
    key = (ctx.settings.admin_token or "").encode()
    return hmac.new(key, f"orderflow-console:{issued}".encode(), hashlib.sha256).hexdigest()


def session_cookie(ctx: AppContext) -> str:
    """A cookie value that proves the admin token was shown, without containing it."""
    issued = str(int(time.time()))
    return f"{issued}.{_signature(ctx, issued)}"


def session_valid(ctx: AppContext, value: str | None) -> bool:
    if not ctx.settings.admin_token or not value:
        return False
    issued, _, signature = value.partition(".")
    if not issued.isdigit() or not 0 <= time.time() - int(issued) <= SESSION_SECONDS:
        return False
    return hmac.compare_digest(signature, _signature(ctx, issued))


def require_login(request: Request, ctx: Context) -> str:
    """The acting admin for the history; anyone else is sent to the login page."""
    if not session_valid(ctx, request.cookies.get(COOKIE)):
        if request.method != "GET":  # a form posted after the session ended: start afresh
            raise LoginRequired(f"{PREFIX}/orders")
        query = f"?{request.url.query}" if request.url.query else ""
        raise LoginRequired(request.url.path + query)
    return ACTOR


Admin = Annotated[str, Depends(require_login)]


def safe_next(value: str | None) -> str:
    """Only ever send a freshly logged-in admin to a console page (no open redirect)."""
    default = f"{PREFIX}/orders"
    if not value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith(PREFIX) or "\\" in value:
        return default
    if parts.path.rstrip("/") in (f"{PREFIX}/login", f"{PREFIX}/logout", PREFIX):
        return default
    return value


def logged_in(request: Request, ctx: AppContext, next_url: str | None) -> Response:
    response = redirect(safe_next(next_url))
    response.set_cookie(
        COOKIE,
        session_cookie(ctx),
        max_age=SESSION_SECONDS,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


# --- pages ---------------------------------------------------------------------------------

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("")
@router.get("/")
def home(_: Admin) -> Response:
    return redirect(f"{PREFIX}/orders")


@router.get("/login")
def login_page(
    request: Request, ctx: Context, token: str | None = None, next: str | None = None
) -> Response:
    if token is not None:  # the demo's printed link: /console/login?token=…
        if token_matches(ctx, token):
            return logged_in(request, ctx, next)
        return render(
            request, "login.html", {"error": "That token is not right.", "next": next}, 401
        )
    if session_valid(ctx, request.cookies.get(COOKIE)):
        return redirect(safe_next(next))
    return render(request, "login.html", {"error": None, "next": next})


@router.post("/login")
def login(
    request: Request,
    ctx: Context,
    token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    if token_matches(ctx, token.strip()):
        return logged_in(request, ctx, next)
    message = "That token is not right." if token.strip() else "Enter the admin token."
    return render(request, "login.html", {"error": message, "next": next}, 401)


@router.post("/logout")
def logout() -> Response:
    response = redirect(f"{PREFIX}/login")
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response


@router.get("/orders")
def orders(
    request: Request,
    ctx: Context,
    _: Admin,
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
def new_order(request: Request, ctx: Context, _: Admin, q: str | None = None) -> Response:
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
    actor: Admin,
    customer_id: Annotated[str, Form()] = "",
    sku: Annotated[list[str], Form()] = [],  # noqa: B006 (FastAPI copies defaults)
    quantity: Annotated[list[str], Form()] = [],  # noqa: B006
    idempotency_key: Annotated[str, Form()] = "",
) -> Response:
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
                        actor=actor,
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
    "cancelled": "Order cancelled. Stock is released; any charge is refunded.",
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
            "terminal": status in TERMINAL,
            "refresh": status not in TERMINAL,
        },
        status_code,
    )


@router.get("/orders/{order_ref}")
def order_page(
    request: Request, ctx: Context, _: Admin, order_ref: str, notice: str | None = None
) -> Response:
    return _order_page(request, ctx, order_ref, notice=notice)


@router.post("/orders/{order_ref}/cancel")
def cancel_order(
    request: Request,
    ctx: Context,
    actor: Admin,
    order_ref: str,
    reason: Annotated[str, Form()] = "",
) -> Response:
    order_id = _order_id(order_ref)
    if order_id is None:
        return not_found(request, f"There is no order {order_ref}.")
    try:
        with ctx.db.transaction() as session:
            service.cancel_order(
                session, order_id, actor=actor, reason=reason.strip() or "cancelled by admin"
            )
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
    return redirect(f"{PREFIX}/orders/{order_id}?notice=cancelled")


@router.get("/mailbox")
def mailbox(request: Request, ctx: Context, _: Admin) -> Response:
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
def unknown_page(request: Request, _: Admin, rest: str) -> Response:
    return not_found(request, "There is no such page in the console.")


def install(app: FastAPI) -> None:
    """Mount the console's pages on the app."""

    @app.exception_handler(LoginRequired)
    async def login_required(_: Request, exc: LoginRequired) -> Response:
        return redirect(f"{PREFIX}/login?next={quote(exc.next_url, safe='/')}")

    app.include_router(router)
