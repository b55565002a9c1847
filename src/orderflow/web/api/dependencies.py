"""Dependency health: each outside service's breaker state and backlog."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from orderflow.dependencies.queries import dependencies_view
from orderflow.web.context import Admin, Context, ReadSession
from orderflow.wiring import dependency_policies

router = APIRouter(tags=["operations"])


@router.get("/dependencies")
def list_dependencies(session: ReadSession, ctx: Context, _: Admin) -> dict[str, Any]:
    rates = {name: p.rate_per_second for name, p in dependency_policies(ctx.settings).items()}
    return {"data": dependencies_view(session, rates)}
