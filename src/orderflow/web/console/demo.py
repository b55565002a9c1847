"""The demo's switches (only under `orderflow demo`): make the simulated world misbehave."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import Response

from orderflow.web.console.rendering import PREFIX, not_found, redirect, render
from orderflow.web.console.sessions import Poster, User, forbid
from orderflow.web.context import AppContext, Context, DemoSimulators

router = APIRouter(prefix=PREFIX, include_in_schema=False)
TIMEOUT = 5.0
BOBS_POST, PAYDESK = "Bob's Post", "Paydesk"


@dataclass(frozen=True)
class Switch:
    simulator: str  # BOBS_POST | PAYDESK
    label: str  # the button
    changes: dict[str, Any]  # PATCH /_sim/switches
    says: str  # the notice afterwards


SWITCHES = {
    "carrier-503": Switch(BOBS_POST, "Down (503)", {"outage": "503"}, "Bob's Post answers 503."),
    "carrier-hang": Switch(
        BOBS_POST,
        "Down (hanging)",
        {"outage": "hang", "hang_seconds": 30.0},
        "Bob's Post hangs 30 s on each request, then answers 503.",
    ),
    "carrier-up": Switch(BOBS_POST, "Back up", {"outage": None}, "Bob's Post answers again."),
    "paydesk-slow": Switch(
        PAYDESK, "Slow (2 s)", {"latency_seconds": 2.0}, "Paydesk takes 2 s per answer."
    ),
    "paydesk-normal": Switch(
        PAYDESK,
        "Normal",
        {"latency_seconds": 0.0, "outage": None},
        "Paydesk answers at its normal speed.",
    ),
    "webhooks-lost": Switch(
        BOBS_POST,
        "Lose half the webhooks",
        {"webhook_loss_rate": 0.5},
        "Bob's Post loses half its webhooks; polling finds what they missed.",
    ),
    "webhooks-duplicated": Switch(
        BOBS_POST,
        "Send webhooks twice",
        {"webhook_duplicate_rate": 1.0},
        "Bob's Post sends each webhook twice; each is applied once.",
    ),
    "webhooks-normal": Switch(
        BOBS_POST,
        "Webhooks normal",
        {"webhook_loss_rate": 0.0, "webhook_duplicate_rate": 0.0},
        "Bob's Post sends each webhook once.",
    ),
}


def _url(demo: DemoSimulators, simulator: str) -> str:
    base = demo.bobs_post_url if simulator == BOBS_POST else demo.paydesk_url
    return f"{base}/_sim/switches"


def _current(demo: DemoSimulators) -> dict[str, dict[str, Any] | None]:
    found: dict[str, dict[str, Any] | None] = {}
    for simulator in (BOBS_POST, PAYDESK):
        try:
            answer = httpx.get(_url(demo, simulator), timeout=TIMEOUT)
            found[simulator] = answer.json() if answer.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            found[simulator] = None
    return found


def _demo_page(
    request: Request, ctx: AppContext, *, notice: str | None = None, error: str | None = None
) -> Response:
    assert ctx.demo is not None
    groups: dict[str, list[tuple[str, Switch]]] = {}
    for name, switch in SWITCHES.items():
        groups.setdefault(switch.simulator, []).append((name, switch))
    return render(
        request,
        "demo.html",
        {
            "section": "demo",
            "switches": groups,
            "current": _current(ctx.demo),
            "notice": notice,
            "error": error,
        },
        502 if error else 200,
    )


@router.get("/demo")
def demo_page(request: Request, ctx: Context, user: User, done: str | None = None) -> Response:
    if ctx.demo is None:
        return not_found(request, "The demo's switches exist only under `orderflow demo`.")
    forbid(user, "flip the demo's switches")
    switch = SWITCHES.get(done or "")
    return _demo_page(request, ctx, notice=switch.says if switch else None)


@router.post("/demo/{name}")
def flip(request: Request, ctx: Context, user: Poster, name: str) -> Response:
    """The button's form: the server sends the simulator its PATCH /_sim/switches."""
    if ctx.demo is None:
        return not_found(request, "The demo's switches exist only under `orderflow demo`.")
    forbid(user, "flip the demo's switches")
    switch = SWITCHES.get(name)
    if switch is None:
        return not_found(request, f"There is no demo switch '{name[:40]}'.")
    try:
        answer = httpx.patch(_url(ctx.demo, switch.simulator), json=switch.changes, timeout=TIMEOUT)
        answer.raise_for_status()
    except httpx.HTTPError as exc:
        error = f"{switch.simulator} did not take the switch: {exc}."
        return _demo_page(request, ctx, error=error)
    return redirect(f"{PREFIX}/demo?done={name}")
