"""Console pages for dead letters: the inbox by cause, a group, one dead letter and its evidence;
redrive one or a group (dry run first, then its progress), discard (four-eyes), fix an address."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from pydantic import ValidationError

from orderflow.deadletters import queries, service
from orderflow.deadletters.queries import Filter
from orderflow.dependencies.policy import LABELS
from orderflow.errors import DomainError, NotFound
from orderflow.orders import service as orders
from orderflow.orders.models import Order
from orderflow.orders.service import ADDRESS_CORRECTABLE
from orderflow.orders.workflow import BOOK
from orderflow.people import four_eyes
from orderflow.people.roles import Role
from orderflow.people.service import LoggedIn
from orderflow.tasks.models import Task
from orderflow.web.api.schemas import AddressIn
from orderflow.web.console.rendering import PREFIX, not_found, redirect, render, sentence
from orderflow.web.console.sessions import NotAllowed, Poster, User, forbid
from orderflow.web.context import AppContext, Context
from orderflow.web.params import parse_id

PAGE = 50
MAX_CAUSE = 500
ACTIONS = (four_eyes.DISCARD, four_eyes.BULK_REDRIVE)

router = APIRouter(prefix=f"{PREFIX}/dead-letters", include_in_schema=False)

NOTICES = {
    "redriven": "Redriven: the work is queued again and its order moves on.",
    "fixed": "Address corrected and the booking redriven.",
    "proposed": "Proposed: another admin must approve it before it runs.",
    "approved": "Approved: the action has been carried out.",
    "rejected": "Proposal closed: nothing was done.",
}


def _cause(value: str | None) -> str | None:
    """A cause from the address bar, or None if none can match (too long, a NUL byte)."""
    if value is None or len(value) > MAX_CAUSE or "\x00" in value:
        return None
    return value


def cause_url(cause: str) -> str:
    return f"{PREFIX}/dead-letters?cause={quote(cause, safe='')}"


def may_redrive(user: LoggedIn, step: str) -> bool:
    """Support redrives non-payment work; a charge or refund is an admin's (as in the API)."""
    needed = Role.ADMIN if step in four_eyes.PAYMENT_STEPS else Role.SUPPORT
    return user.who.can(needed)


def _require_redrive(user: LoggedIn, step: str) -> None:
    if not may_redrive(user, step):
        raise NotAllowed(f"Your role ({user.who.role}) cannot redrive {step} work.")


def not_done(
    request: Request, message: str, status_code: int, back: str = "", heading: str = ""
) -> Response:
    """An action refused (409, 403…), or a page that is not there any more: why, and the way
    back (to the order, when there is one)."""
    context = {
        "heading": heading or ("Not allowed" if status_code == 403 else "Not done"),
        "message": message,
        "back": back or f"{PREFIX}/dead-letters",
        "back_label": "To its order" if back else "Back to the dead letters",
    }
    return render(request, "not_done.html", context, status_code)


def _pending(ctx: AppContext) -> list[dict[str, Any]]:
    with ctx.db.read() as session:
        return [p for p in four_eyes.listing(session) if p["action"] in ACTIONS]


@router.get("")
def inbox(
    request: Request,
    ctx: Context,
    _: User,
    cause: str | None = None,
    after: str | None = None,
    notice: str | None = None,
) -> Response:
    """Without `cause`: the groups. With it: that group's dead letters, oldest first."""
    if cause:
        return _group(request, ctx, cause, after)
    with ctx.db.read() as session:
        groups = queries.group_counts(session, Filter())
    context = {
        "groups": groups,
        "total": sum(g["count"] for g in groups),
        "proposals": _pending(ctx),
        "notice": NOTICES.get(notice or ""),
        "cause_url": cause_url,
        "refresh": True,
    }
    return render(request, "dead_letters.html", context)


def _group(request: Request, ctx: AppContext, raw: str, after: str | None) -> Response:
    cause = _cause(raw)
    if cause is None:
        return not_found(request, "No dead letter has this cause.")
    flt = Filter(cause=cause)
    cursor = parse_id(after)
    with ctx.db.read() as session:
        found = queries.group_counts(session, flt)
        tasks, next_after = queries.page(session, flt, after_id=cursor, limit=PAGE)
        rows = [queries.summary(t) for t in tasks]
    group = found[0] if found else None
    context = {
        "cause": cause,
        "group": group,
        "rows": rows,
        "after": cursor,
        "next_after": next_after,
        "cause_url": cause_url,
        "payment_work": group is not None and group["step"] in four_eyes.PAYMENT_STEPS,
        "refresh": True,
    }
    return render(request, "dead_letters_group.html", context)


# --- a group at once ------------------------------------------------------------------------


@router.get("/groups/redrive")
def confirm_group_redrive(request: Request, ctx: Context, user: User, cause: str = "") -> Response:
    """The dry run: how many would go round again, before anyone confirms."""
    chosen = _cause(cause)
    if not chosen:
        return not_found(request, "No dead letter has this cause.")
    flt = Filter(cause=chosen)
    with ctx.db.read() as session:
        preview = service.preview(session, flt)
    groups = preview["groups"]
    step = groups[0]["step"] if groups else ""
    payment = four_eyes.may_include_payment_work(Filter(step=step or None))
    if payment:
        forbid(user, "redrive payment work")
    else:
        _require_redrive(user, step)
    context = {
        "cause": chosen,
        "count": preview["would_redrive"],
        "group": groups[0] if groups else None,
        "four_eyes": payment,
        "cause_url": cause_url,
    }
    return render(request, "dead_letters_redrive.html", context)


@router.post("/groups/redrive")
def redrive_group(
    request: Request,
    ctx: Context,
    user: Poster,
    cause: Annotated[str, Form()] = "",
) -> Response:
    """Start the durable, paced bulk redrive; payment work is proposed instead (four-eyes)."""
    chosen = _cause(cause)
    if not chosen:
        return not_found(request, "No dead letter has this cause.")
    try:
        with ctx.db.transaction() as session:
            groups = queries.group_counts(session, Filter(cause=chosen))
            if not groups:
                raise NotFound("no dead letter has this cause any more")
            step = str(groups[0]["step"])
            flt = Filter(step=step, cause=chosen)
            if four_eyes.may_include_payment_work(flt):
                forbid(user, "redrive payment work")
                params = {"step": step, "cause": chosen}
                why = f"group redrive of {groups[0]['count']} dead letters, by {user.name}"
                four_eyes.propose(session, user.who, four_eyes.BULK_REDRIVE, params, why)
                redrive_id = None
            else:
                _require_redrive(user, step)
                redrive_id = service.start_bulk_redrive(
                    session, flt, actor=user.who.actor, batch=100, pace_seconds=0.5
                )
    except NotFound:
        return not_found(request, "No dead letter has this cause any more.")
    except DomainError as exc:
        return render(
            request,
            "dead_letters_redrive.html",
            {"cause": chosen, "count": None, "group": None, "error": sentence(exc.message)},
            exc.status_code,
        )
    if redrive_id is None:
        return redirect(f"{PREFIX}/dead-letters?notice=proposed")
    return redirect(f"{PREFIX}/dead-letters/redrives/{redrive_id}")


# --- one dead letter ----------------------------------------------------------------------


def _letter_page(
    request: Request,
    ctx: AppContext,
    letter_ref: str,
    *,
    notice: str | None = None,
    error: str | None = None,
    address: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    task_id = parse_id(letter_ref)
    try:
        if task_id is None:
            raise NotFound(letter_ref)
        with ctx.db.read() as session:
            letter = queries.detail(session, task_id)
            order = session.get(Order, letter["order_id"]) if letter["order_id"] else None
            ship_to = dict(order.ship_to) if order is not None else None
            correctable = order is not None and order.status in ADDRESS_CORRECTABLE
            proposals = [
                p
                for p in four_eyes.listing(session, order_id=letter["order_id"])
                if p["action"] == four_eyes.DISCARD and p["params"].get("task_id") == task_id
            ]
    except NotFound:
        task = _task(ctx, task_id)
        back = f"{PREFIX}/orders/{task.order_id}" if task and task.order_id else ""
        if error is not None:  # acted on, meanwhile redriven: say why nothing was done
            return not_done(request, error, status_code, back)
        if task is not None:  # redriven (or never dead): the work goes on; say where
            message = f"Task {task.id} is not a dead letter: it is {task.status}."
            return not_done(request, message, 404, back, heading="Not a dead letter")
        return not_found(request, f"There is no dead letter {letter_ref}.")
    user: LoggedIn = request.state.console_user
    dead = letter["status"] == "dead"
    context = {
        "letter": letter,
        "dependency_label": LABELS.get(letter["dependency"] or "", letter["dependency"]),
        "ship_to": ship_to,
        "address": address if address is not None else (ship_to or {}).get("address") or {},
        "can_redrive": dead and may_redrive(user, letter["step"]),
        "can_discard": dead and user.who.can(Role.ADMIN) and not proposals,
        "can_fix": dead and letter["step"] == BOOK and correctable and user.who.can(Role.SUPPORT),
        "proposals": proposals,
        "notice": NOTICES.get(notice or ""),
        "error": error,
        "cause_url": cause_url,
    }
    return render(request, "dead_letter.html", context, status_code)


@router.get("/{letter_ref}")
def letter_page(
    request: Request, ctx: Context, _: User, letter_ref: str, notice: str | None = None
) -> Response:
    return _letter_page(request, ctx, letter_ref, notice=notice)


def _task(ctx: AppContext, task_id: int | None) -> Task | None:
    if task_id is None:
        return None
    with ctx.db.read() as session:
        task = session.get(Task, task_id)
        if task is not None:
            session.expunge(task)
        return task


def _after_redrive(task: Task, notice: str) -> str:
    """Where to follow redriven work: its order's page (or the inbox, for work of no order)."""
    if task.order_id is None:
        return f"{PREFIX}/dead-letters?notice={notice}"
    return f"{PREFIX}/orders/{task.order_id}?notice={notice}"


@router.post("/{letter_ref}/redrive")
def redrive_one(request: Request, ctx: Context, user: Poster, letter_ref: str) -> Response:
    task = _task(ctx, parse_id(letter_ref))
    if task is None:
        return not_found(request, f"There is no dead letter {letter_ref}.")
    _require_redrive(user, task.kind)
    try:
        with ctx.db.transaction() as session:
            service.redrive(session, task.id, actor=user.who.actor)
    except DomainError as exc:
        return _letter_page(
            request,
            ctx,
            letter_ref,
            error=f"Not redriven: {sentence(exc.message)}",
            status_code=exc.status_code,
        )
    return redirect(_after_redrive(task, "redriven"))


@router.post("/{letter_ref}/discard")
def discard(
    request: Request,
    ctx: Context,
    user: Poster,
    letter_ref: str,
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Propose the discard: another admin approves it (four-eyes), on this page or the order's."""
    forbid(user, "discard dead letters")
    task_id = parse_id(letter_ref)
    if task_id is None:
        return not_found(request, f"There is no dead letter {letter_ref}.")
    try:
        with ctx.db.transaction() as session:
            params = {"task_id": task_id}
            four_eyes.propose(session, user.who, four_eyes.DISCARD, params, reason[:500])
    except NotFound:
        return not_found(request, f"There is no dead letter {letter_ref}.")
    except DomainError as exc:
        return _letter_page(
            request,
            ctx,
            letter_ref,
            error=f"Not proposed: {sentence(exc.message)}",
            status_code=exc.status_code,
        )
    return redirect(f"{PREFIX}/dead-letters/{task_id}?notice=proposed")


ADDRESS_FIELDS = ("line1", "line2", "city", "postcode", "country")


def _address_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    name = {"line1": "Address line 1", "line2": "Address line 2", "postcode": "Postcode"}
    where = str(first["loc"][0]) if first["loc"] else ""
    if where == "country":
        return "Country: enter a two-letter country code in capitals, such as GB."
    return f"{name.get(where, where.title())}: {first['msg'].lower()}."


@router.post("/{letter_ref}/fix-address")
def fix_address(
    request: Request,
    ctx: Context,
    user: Poster,
    letter_ref: str,
    line1: Annotated[str, Form()] = "",
    line2: Annotated[str, Form()] = "",
    city: Annotated[str, Form()] = "",
    postcode: Annotated[str, Form()] = "",
    country: Annotated[str, Form()] = "",
) -> Response:
    """Correct the order's address (recorded in its history), then redrive its booking."""
    if not user.who.can(Role.SUPPORT):
        raise NotAllowed(f"Your role ({user.who.role}) cannot correct addresses.")
    task = _task(ctx, parse_id(letter_ref))
    if task is None or task.order_id is None:
        return not_found(request, f"There is no dead letter {letter_ref}.")
    entered = {
        "line1": line1,
        "line2": line2.strip() or None,
        "city": city,
        "postcode": postcode,
        "country": country.strip().upper(),
    }
    try:
        address = AddressIn.model_validate(entered).model_dump()
    except ValidationError as exc:
        return _letter_page(
            request,
            ctx,
            letter_ref,
            error=f"Not saved. {_address_error(exc)}",
            address=entered,
            status_code=422,
        )
    why = f"address corrected by {user.name} to redrive dead letter {task.id}"
    try:
        with ctx.db.transaction() as session:
            orders.correct_address(
                session, task.order_id, address, actor=user.who.actor, reason=why
            )
            service.redrive(session, task.id, actor=user.who.actor)
    except DomainError as exc:
        return _letter_page(
            request,
            ctx,
            letter_ref,
            error=f"Not saved: {sentence(exc.message)}",
            address=entered,
            status_code=exc.status_code,
        )
    return redirect(_after_redrive(task, "fixed"))


@router.get("/redrives/{redrive_ref}")
def progress(request: Request, ctx: Context, _: User, redrive_ref: str) -> Response:
    redrive_id = parse_id(redrive_ref)
    try:
        if redrive_id is None:
            raise NotFound(redrive_ref)
        with ctx.db.read() as session:
            state = service.bulk_progress(session, redrive_id)
    except NotFound:
        return not_found(request, f"There is no bulk redrive {redrive_ref}.")
    context = {
        "redrive": state,
        "cause": state["filter"].get("cause"),
        "cause_url": cause_url,
        "refresh": state["status"] == "running",
    }
    return render(request, "dead_letters_progress.html", context)


@router.post("/proposals/{proposal_id}/{decision}")
def decide(
    request: Request, ctx: Context, user: Poster, proposal_id: str, decision: str
) -> Response:
    """A second admin approves a discard or group redrive (it runs now), or rejects it."""
    forbid(user, "decide on proposals")
    known = parse_id(proposal_id)
    if decision not in ("approve", "reject") or known is None:
        return not_found(request, "There is no such proposal.")
    try:
        if decision == "approve":
            done = four_eyes.approve_and_run(ctx.db, user.who, known)
        else:
            with ctx.db.transaction() as session:
                done = four_eyes.view(four_eyes.reject(session, user.who, known))
    except NotFound:
        return not_found(request, "There is no such proposal.")
    except DomainError as exc:
        return not_done(request, f"Not done: {sentence(exc.message)}", exc.status_code)
    redrive_id = (done.get("outcome") or {}).get("redrive_id")
    if decision == "approve" and redrive_id:
        return redirect(f"{PREFIX}/dead-letters/redrives/{redrive_id}")
    return redirect(
        f"{PREFIX}/dead-letters?notice={'approved' if decision == 'approve' else 'rejected'}"
    )
