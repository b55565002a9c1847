"""Shared fixtures: real databases (SQLite and PostgreSQL), the outside world, a whole stack."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from orderflow.db import Database
from tests.support import databases
from tests.support.stack import Stack, start_stack

# In-process servers and workers log through structlog's defaults; keep their tracebacks plain
# (with `rich` installed, the default renders each one highlighted, taking seconds under load).
structlog.configure(
    processors=[
        *structlog.get_config()["processors"][:-1],
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback),
    ]
)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return databases.migrated_sqlite_template(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    if not databases.postgres_available():
        if os.environ.get("ORDERFLOW_TESTS_WITHOUT_POSTGRES") == "1":
            pytest.skip("PostgreSQL is not running and ORDERFLOW_TESTS_WITHOUT_POSTGRES=1")
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (see README: Tests)")
    name = databases.create_pg_database()
    db = Database(databases.pg_url(name), pool_size=0)
    from orderflow.migrate import upgrade

    upgrade(db.engine)
    db.dispose()
    yield databases.pg_url(name)
    databases.drop_pg_database(name)


def _database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return databases.fresh_sqlite(request.getfixturevalue("sqlite_template"), tmp_path)
    url: str = request.getfixturevalue("pg_url")
    db = Database(url, pool_size=0)
    databases.truncate_all(db)
    db.dispose()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: each test runs once on SQLite and once on PostgreSQL."""
    return _database_url(request, tmp_path)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def stack(database_url: str) -> Iterator[Stack]:
    """API on a real port, simulators, mail sink, and a worker the test drives."""
    with start_stack(database_url) as s:
        yield s
