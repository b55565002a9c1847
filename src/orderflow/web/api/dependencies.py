"""Dependency health: each outside service's breaker state and backlog; backpressure."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from orderflow.dependencies.queries import dependencies_view
from orderflow.web.context import AppContext, Context, ReadSession, Viewer
from orderflow.web.openapi import READ, errors
from orderflow.wiring import dependency_policies

router = APIRouter(tags=["operations"])


@router.get("/dependencies", responses=errors(*READ))
def list_dependencies(session: ReadSession, ctx: Context, _: Viewer) -> dict[str, Any]:
    rates = {name: p.rate_per_second for name, p in dependency_policies(ctx.settings).items()}
    return {"data": dependencies_view(session, rates), "backpressure": _pressure(ctx)}


@router.get("/backpressure", responses=errors(*READ))
def backpressure(ctx: Context, _: Viewer) -> dict[str, Any]:
    """Whether intake is being slowed down: normal, warning or shedding, and why."""
    return _pressure(ctx)


def _pressure(ctx: AppContext) -> dict[str, Any]:
    settings = ctx.settings
    return {
        **ctx.pressure.current().as_dict(),
        "warning_seconds": settings.backpressure_warning_seconds,
        "shedding_seconds": settings.backpressure_shedding_seconds,
    }
