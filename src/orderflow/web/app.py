"""The FastAPI application: JSON API, webhooks, health checks and the console."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from orderflow import __version__
from orderflow.config import Settings
from orderflow.db import Database
from orderflow.observability.metrics import registry_for
from orderflow.web import console, docs, errors, health, openapi, webhooks
from orderflow.web.api import audit, catalog, dead_letters, dependencies, orders, proposals
from orderflow.web.body_limit import BodyLimit
from orderflow.web.context import AppContext, DemoSimulators


def create_app(
    settings: Settings, db: Database, *, mailbox: Any = None, demo: DemoSimulators | None = None
) -> FastAPI:
    app = FastAPI(
        title="orderflow",
        version=__version__,
        docs_url=None,  # served by web/docs.py from the package's own files (no CDN)
        redoc_url=None,
        description=(
            "Fault-tolerant order fulfilment. Bearer token on /api/v1 (a personal token: "
            "`orderflow tokens create`, or the admin token). Errors are JSON "
            '`{"error": {"code", "message"}}` with an honest status.'
        ),
    )
    app.state.ctx = AppContext(settings=settings, db=db, mailbox=mailbox, demo=demo)
    app.state.metrics = registry_for(db, app.state.ctx.pressure)
    errors.install(app)
    # Routes are matched in order: the busiest first (four webhooks and one placement per order).
    app.include_router(webhooks.router)
    app.include_router(orders.router, prefix="/api/v1")
    app.include_router(catalog.router, prefix="/api/v1")
    app.include_router(audit.router, prefix="/api/v1")
    app.include_router(dependencies.router, prefix="/api/v1")
    app.include_router(dead_letters.router, prefix="/api/v1")
    app.include_router(proposals.router, prefix="/api/v1")
    app.include_router(health.router)
    console.install(app)
    openapi.install(app)
    docs.install(app)
    # Added last, so outermost: the size limit holds before authentication and parsing on
    # every route (tests/integration/test_edge.py checks that it stays the outermost).
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
