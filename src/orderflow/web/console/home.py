"""The console's home: the state of the system at a glance, with charts over an hour or a day."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from orderflow.clock import now
from orderflow.deadletters.queries import cause_counts
from orderflow.dependencies.queries import dependencies_view
from orderflow.observability import overview
from orderflow.observability.buckets import WINDOWS, window
from orderflow.orders.models import parse_order_id
from orderflow.web.console.charts import band_chart, line_chart
from orderflow.web.console.recent import recent_for
from orderflow.web.console.rendering import PREFIX, redirect, render
from orderflow.web.console.sessions import User
from orderflow.web.context import Context
from orderflow.wiring import dependency_policies

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("/go")
def go_to_order(request: Request, _: User, ref: str = "") -> Response:
    """The home page's "go to order" box: a reference (ORD-000123) or an id, to its page."""
    order_id = parse_order_id(ref)
    if order_id is None:
        message = f"'{ref[:40]}' is not an order reference: they look like ORD-000123."
        return render(request, "bad_request.html", {"message": message}, 400)
    return redirect(f"{PREFIX}/orders/{order_id}")


@router.get("")
@router.get("/")
def home(request: Request, ctx: Context, _: User, span: str = "hour") -> Response:
    if span not in WINDOWS:
        message = f"There is no chart span '{span[:40]}': choose the last hour or the last day."
        return render(request, "bad_request.html", {"message": message}, 400)
    rates = {name: p.rate_per_second for name, p in dependency_policies(ctx.settings).items()}
    chosen = window(span, now())
    recent = recent_for(request.app.state, ctx.settings.console_counts_seconds)

    def counts() -> tuple[datetime, dict[str, int], list[dict[str, Any]]]:
        with ctx.db.read() as session:
            return now(), overview.orders_by_status(session), cause_counts(session)

    def flow_of_window() -> list[dict[str, Any]]:
        with ctx.db.read() as session:
            return overview.placed_and_delivered(session, window(span, now()))

    counted_at, by_status, dead_letters = recent.get("counts", counts)
    flow = recent.get(("flow", span), flow_of_window)
    with ctx.db.read() as session:
        backlog = overview.backlog_series(session, chosen)
        bands = overview.dependency_bands(session, chosen)
        context = {
            "by_status": by_status,
            "dead_letters": dead_letters,
            "counted_at": counted_at,
            "work": overview.work_waiting(session),
            "dependencies": dependencies_view(session, rates),
            "incidents": overview.open_incidents(session),
            "bands": bands,
        }
    series: dict[str, list[int | None]] = {
        "placed": [b["placed"] for b in flow],
        "delivered": [b["delivered"] for b in flow],
    }
    return render(
        request,
        "home.html",
        {
            **context,
            "section": "home",
            "span": span,
            "window": chosen,
            "flow": flow,
            "flow_chart": line_chart(chosen, series),
            "backlog": backlog,
            "backlog_chart": line_chart(chosen, dict(backlog)),
            "bands_chart": band_chart(chosen, bands),
            "refresh": True,
        },
    )
