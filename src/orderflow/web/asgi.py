"""The API app built from the environment: what each `orderflow serve` process runs."""

from __future__ import annotations

import sys

from fastapi import FastAPI

from orderflow import heap, logs
from orderflow.config import Settings
from orderflow.db import Database
from orderflow.migrate import require_current
from orderflow.web.app import create_app


def app_from_environment() -> FastAPI:
    """Settings from ORDERFLOW_*, a database whose pool answers 'busy' quickly, the app."""
    # A placement group's database thread needs the GIL back after each round trip, while the
    # event loop thread holds it parsing requests: at the default 5 ms switch interval a group
    # of ~10 round trips (two of them with hot stock rows locked) waits up to 50 ms for it.
    sys.setswitchinterval(0.0005)
    logs.configure(json=True)
    settings = Settings()
    db = Database(settings.database_url, pool_timeout=settings.db_pool_timeout_seconds)
    require_current(db.engine)
    app = create_app(settings, db)
    heap.settle()
    return app
