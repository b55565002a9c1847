"""Console pages for orders: the list, placing one, its page, cancelling, re-sending a lost or
returned parcel, and four-eyes decisions."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from sqlalchemy.exc import IntegrityError

from orderflow.audit import bundle, investigation, timeline
from orderflow.catalog import service as catalog
from orderflow.deadletters import queries as dead_letter_queries
from orderflow.errors import Conflict, DomainError, Invalid, NotFound
from orderflow.orders import queries, replacement, service, waiting
from orderflow.orders.models import parse_order_id
from orderflow.orders.service import LineRequest
from orderflow.orders.status import CANCELLABLE, TERMINAL, OrderStatus
from orderflow.people import four_eyes
from orderflow.people.roles import Role
from orderflow.tasks.models import TaskStatus
from orderflow.web.api.audit import anchor_key
from orderflow.web.console.rendering import (
    HEADERS,
    PREFIX,
    STATUSES,
    not_found,
    redirect,
    render,
    sentence,
)
from orderflow.web.console.sessions import NotAllowed, Poster, User, forbid, user_can
from orderflow.web.context import AppContext, Context
from orderflow.web.params import parse_id

LINE_SLOTS = 3
OPEN = (TaskStatus.READY, TaskStatus.RUNNING, TaskStatus.DEAD)

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def _day(value: str | None, name: str) -> datetime | None:
    """A date from the search form (2026-11-28) as midnight UTC; Invalid if it is not one."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        return datetime.combine(date.fromisoformat(text), time(), UTC)
    except ValueError:
        raise Invalid(f"{name} must be a date like 2026-11-28, not “{text[:40]}”") from None


@router.get("/orders")
def orders(
    request: Request,
    ctx: Context,
    _: User,
    q: str | None = None,
    status: str | None = None,
    since: Annotated[str | None, Query(alias="from")] = None,
    until: Annotated[str | None, Query(alias="to")] = None,
    before: str | None = None,
) -> Response:
    """Search by reference, customer name or e-mail, status and date; newest first."""
    chosen = status if status in STATUSES else None
    cursor = parse_id(before)
    text = (q or "").strip()[:200].replace("\x00", "")
    search = {"q": text, "status": chosen or "", "from": since or "", "to": until or ""}
    error = None
    rows: list[dict[str, Any]] = []
    next_before = None
    words: dict[int, str] = {}
    try:
        first = _day(since, "From")
        last = _day(until, "To")
        if first and last and first > last:
            raise Invalid("“From” is after “To”: no order can match")
        with ctx.db.read() as session:
            rows, next_before = queries.search_orders(
                session,
                text=text or None,
                status=chosen,
                created_from=first,
                created_before=last + timedelta(days=1) if last else None,
                before=cursor,
                limit=50,
            )
            words = queries.waiting_words(session, [r["id"] for r in rows])
    except Invalid as exc:
        error = sentence(exc.message)
    filters = {k: v for k, v in search.items() if v}
    return render(
        request,
        "orders.html",
        {
            "orders": rows,
            "waiting": words,
            "search": search,
            "searching": bool(filters),
            "query": urlencode(filters),
            "status": chosen,
            "before": cursor,
            "next_before": next_before,
            "error": error,
            "refresh": error is None,
        },
        422 if error else 200,
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
    forbid(user, "place orders")
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
    forbid(user, "place orders")
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
        message = sentence(exc.message)
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


NOTICES = {
    "placed": "Order placed. Payment is under way; this page follows it.",
    "already-placed": "This form had already placed this order; nothing new was created.",
    "cancelled": "Order cancelled. Stock is released.",
    "proposed": "Cancellation and refund proposed: another admin must approve it.",
    "resend-proposed": "Re-send of the parcel proposed: another admin must approve it.",
    "resent": "Parcel re-sent: a replacement order is on its way (linked below).",
    "approved": "Approved: the action has been carried out.",
    "rejected": "Proposal closed: nothing was done.",
    "redriven": "Redriven: the work is queued again; this page follows it.",
    "fixed": "Address corrected and the booking redriven; this page follows it.",
}


def _order_page(
    request: Request,
    ctx: AppContext,
    order_ref: str,
    *,
    notice: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    order_id = parse_order_id(order_ref)
    try:
        if order_id is None:
            raise NotFound(f"no order {order_ref}")
        with ctx.db.read() as session:
            order = queries.order_view(session, order_id)
            charged = service.charged_payment(session, order_id) is not None
            pending = four_eyes.listing(session, order_id=order_id)
            audit = investigation.audit_view(session, order_id, anchor_key(ctx))
            letters = {t["step"]: t["id"] for t in dead_letter_queries.of_order(session, order_id)}
    except NotFound:
        return not_found(request, f"There is no order {order_ref}.")
    status = OrderStatus(order["status"])
    ended = status in TERMINAL
    work = [
        dict(w, words=waiting.of_work(w, ended=ended)) for w in order["work"] if w["status"] in OPEN
    ]
    return render(
        request,
        "order.html",
        {
            "order": order,
            "open_work": work,
            "waiting_words": waiting.of_order(work, ended=ended),
            "dead_letters": letters,
            "timeline": timeline.timeline(audit["entries"], order["currency"]),
            "verdict": audit["verdict"],
            "can_support": user_can(request, Role.SUPPORT),
            "notice": NOTICES.get(notice or ""),
            "error": error,
            "cancellable": status in CANCELLABLE,
            "resendable": status == replacement.RESENDABLE
            and not order["replaced_by"]
            and not any(p["action"] == four_eyes.RESEND for p in pending),
            "charged": charged,
            "proposals": pending,
            "terminal": status in TERMINAL,
            "refresh": status not in TERMINAL,
        },
        status_code,
    )


@router.get("/orders/{order_ref}/dispute-bundle")
def dispute_bundle(request: Request, ctx: Context, user: User, order_ref: str) -> Response:
    """The order's evidence bundle as a JSON download (checkable offline: verify_bundle.py)."""
    if not user.who.can(Role.SUPPORT):
        raise NotAllowed(f"Your role ({user.who.role}) cannot download dispute bundles.")
    order_id = parse_order_id(order_ref)
    try:
        if order_id is None:
            raise NotFound(order_ref)
        with ctx.db.read() as session:
            data = bundle.build(
                session,
                order_id,
                archive_dir=ctx.settings.audit_archive_dir,
                public_key=anchor_key(ctx),
            )
    except NotFound:
        return not_found(request, f"There is no order {order_ref}.")
    name = f"{data['order']['reference']}.dispute.json"
    return Response(
        json.dumps(data, indent=2, ensure_ascii=False),
        media_type="application/json",
        headers={
            **HEADERS,
            "Content-Disposition": f'attachment; filename="{name}"',
        },
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
    forbid(user, "cancel orders")
    order_id = parse_order_id(order_ref)
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


@router.post("/orders/{order_ref}/resend")
def resend_order(request: Request, ctx: Context, user: Poster, order_ref: str) -> Response:
    """Re-send a lost or returned parcel; proposed when it needs a second person (as a refund)."""
    forbid(user, "re-send parcels")
    order_id = parse_order_id(order_ref)
    if order_id is None:
        return not_found(request, f"There is no order {order_ref}.")
    why = f"parcel re-sent by {user.name} in the console"
    proposed = False
    try:
        with ctx.db.transaction() as session:
            try:
                four_eyes.guard(session, user.who, four_eyes.RESEND)
            except four_eyes.FourEyesRequired:
                proposed = True
                params = {"order_id": order_id}
                four_eyes.propose(session, user.who, four_eyes.RESEND, params, why)
            else:
                replacement.resend(session, order_id, actor=user.who.actor, reason=why)
    except NotFound:
        return not_found(request, f"There is no order {order_ref}.")
    except DomainError as exc:
        error = f"Not re-sent: {exc.message}."
        return _order_page(request, ctx, order_ref, error=error, status_code=exc.status_code)
    notice = "resend-proposed" if proposed else "resent"
    return redirect(f"{PREFIX}/orders/{order_id}?notice={notice}")


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
    forbid(user, "decide on proposals")
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
            request, ctx, order_ref, error=sentence(exc.message), status_code=exc.status_code
        )
    notice = "approved" if decision == "approve" else "rejected"
    return redirect(f"{PREFIX}/orders/{order_ref}?notice={notice}")
