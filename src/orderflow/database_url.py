"""ORDERFLOW_DATABASE_URL, checked when the settings are read: a malformed URL or a database
orderflow does not run on is one clear line at start, not a traceback at the first query."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

SUPPORTED = "sqlite:///path.db or postgresql+psycopg://user@host/dbname"
DRIVERS = {"sqlite": "pysqlite", "postgresql": "psycopg"}  # the code speaks to these two


def check_database_url(value: str) -> str:
    """`value` if orderflow can use it; ValueError saying what is wrong (never echoing the URL,
    which may hold a password)."""
    try:
        url = make_url(value)
        url.port  # noqa: B018 (parsed lazily: a port that is not a number fails here)
    except (ArgumentError, ValueError):
        raise ValueError(f"not a database URL; expected {SUPPORTED}") from None
    backend = url.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(
            f"orderflow runs on SQLite or PostgreSQL, not {backend!r}; use {SUPPORTED}"
        )
    try:
        dialect = url.get_dialect()
        dialect.import_dbapi()
    except (NoSuchModuleError, ImportError):
        dialect = None
    if dialect is None or dialect.driver != DRIVERS[backend]:
        raise ValueError(
            f"the database driver {url.drivername!r} is not supported; use {SUPPORTED}"
        )
    return value
