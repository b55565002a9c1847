"""How console pages are rendered: templates, filters for people (money, times), headers."""

from __future__ import annotations

import json
import re
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from orderflow.clock import now
from orderflow.dependencies.queries import outages
from orderflow.orders.status import OrderStatus
from orderflow.people.roles import Role
from orderflow.people.service import LoggedIn
from orderflow.web.context import AppContext

PREFIX = "/console"
REFRESH_SECONDS = 2
BANNER_SECONDS = 5  # how often a page that does not follow itself checks for an outage
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

templates = Jinja2Templates(directory=Path(__file__).parent.parent / "templates")
STYLE_SHEET = (Path(__file__).parent.parent / "static" / "console.css").read_bytes()


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


def clock(value: datetime | str | None) -> str:
    """A moment as a time of day, "02:13 UTC" (with the date when it is not today)."""
    moment = _parse_time(value)
    if moment is None:
        return "—"
    if moment.date() != now().date():
        return moment.strftime("%Y-%m-%d %H:%M UTC")
    return moment.strftime("%H:%M:%S UTC")


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
    money=money, when=when, clock=clock, relative=relative, details=details, label=label
)
templates.env.globals.update(
    prefix=PREFIX,
    statuses=STATUSES,
    refresh_seconds=REFRESH_SECONDS,
    banner_seconds=BANNER_SECONDS,
    order_link=order_link,
)


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    """A page, with the logged-in user (if any) for the navigation, CSRF token and CSP nonce."""
    user: LoggedIn | None = getattr(request.state, "console_user", None)
    nonce = secrets.token_urlsafe(16)
    ctx = request.app.state.ctx
    extra = {
        "user": user,
        "outages": banner_outages(ctx) if user else [],
        "demo": ctx.demo is not None,
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


def banner_outages(ctx: AppContext) -> list[dict[str, Any]]:
    """What the outage banner shows (cheap: see `dependencies.queries.outages`)."""
    with ctx.db.read() as session:
        return outages(session)


def redirect(url: str) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303, headers=HEADERS)
    response.headers["Content-Security-Policy"] = "default-src 'none'; frame-ancestors 'none'"
    return response


def not_found(request: Request, message: str) -> Response:
    return render(request, "not_found.html", {"message": message}, 404)


def sentence(message: str) -> str:
    """An error message as a sentence: capitalised, with a full stop."""
    message = message.strip()
    if not message:
        return message
    message = message[0].upper() + message[1:]
    return message if message.endswith((".", "!", "?")) else message + "."
