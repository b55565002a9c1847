"""The API app built from the environment: what each `orderflow serve` process runs."""

from __future__ import annotations

from fastapi import FastAPI

from orderflow import logs
from orderflow.config import Settings
from orderflow.db import Database
from orderflow.migrate import require_current
from orderflow.web.app import create_app


def app_from_environment() -> FastAPI:
    """Settings from ORDERFLOW_*, a database whose pool answers 'busy' quickly, the app."""
    logs.configure(json=True)
    settings = Settings()
    db = Database(settings.database_url, pool_timeout=settings.db_pool_timeout_seconds)
    require_current(db.engine)
    return create_app(settings, db)
