"""The dependencies page: each outside service's state, pace, backlog and history."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from orderflow.dependencies.queries import dependencies_view, history
from orderflow.web.console.rendering import PREFIX, render
from orderflow.web.console.sessions import User
from orderflow.web.context import Context
from orderflow.wiring import dependency_policies

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("/dependencies")
def dependencies(request: Request, ctx: Context, _: User) -> Response:
    policies = dependency_policies(ctx.settings)
    rates = {name: p.rate_per_second for name, p in policies.items()}
    with ctx.db.read() as session:
        views = dependencies_view(session, rates)
        changes = history(session)
    return render(
        request,
        "dependencies.html",
        {
            "section": "dependencies",
            "dependencies": views,
            "policies": policies,
            "history": changes,
            "refresh": True,
        },
    )
