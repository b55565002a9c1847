"""Least privilege on PostgreSQL: migrations as the owner, the service as a role that can only
do what it needs (`orderflow db grant`); it cannot TRUNCATE, DROP or rewrite the history."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from orderflow.cli import main
from orderflow.db import Database
from orderflow.migrate import upgrade
from tests.support import databases
from tests.support.stack import start_stack

pytestmark = pytest.mark.postgres


@dataclass(frozen=True)
class Roles:
    owner_url: str  # postgres: owns the tables, runs migrations
    app_url: str  # the service's role, after `orderflow db grant`
    role: str


@pytest.fixture
def roles() -> Iterator[Roles]:
    """A fresh database migrated by its owner, and a uniquely named role (roles are global to
    the cluster): dropped afterwards, with the database."""
    if not databases.postgres_available():
        if os.environ.get("ORDERFLOW_TESTS_WITHOUT_POSTGRES") == "1":
            pytest.skip("PostgreSQL is not running and ORDERFLOW_TESTS_WITHOUT_POSTGRES=1")
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (see README: Tests)")
    name = databases.create_pg_database()
    role = f"orderflow_app_{uuid.uuid4().hex[:10]}"
    owner_url = databases.pg_url(name)
    try:
        db = Database(owner_url, pool_size=0)
        upgrade(db.engine)
        db.dispose()
        app_url = owner_url.replace("://postgres@", f"://{role}@", 1)
        yield Roles(owner_url, app_url, role)
    finally:
        databases.drop_pg_database(name)
        with psycopg.connect(databases.PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def _grant(roles: Roles, *args: str) -> str:
    result = CliRunner().invoke(
        main,
        ["db", "grant", "--role", roles.role, *args],
        env={"ORDERFLOW_DATABASE_URL": roles.owner_url},
    )
    assert result.exit_code == 0, result.output
    return result.output


def _refused(db: Database, statement: str) -> str:
    with pytest.raises(ProgrammingError) as caught, db.engine.begin() as conn:
        conn.execute(text(statement))
    return str(caught.value.orig)


def test_the_service_role_runs_orders_but_cannot_truncate_drop_or_rewrite_history(
    roles: Roles,
) -> None:
    """As the granted role an order is placed and delivered; TRUNCATE, DROP, CREATE, and
    UPDATE/DELETE of the history fail with permission errors (not just the triggers)."""
    output = _grant(roles)
    assert output.startswith(f"role {roles.role}: reads and writes the working tables")
    _grant(roles)  # again (after a migration): idempotent

    with start_stack(roles.app_url) as stack:
        stack.product("WIDGET", stock=5)
        order = stack.place(stack.customer(), [("WIDGET", 1)])
        stack.work_until_status(order["id"], "delivered")

    app = Database(roles.app_url, pool_size=0)
    try:
        with app.engine.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar_one() == roles.role
            assert conn.execute(text("SELECT count(*) FROM audit_entries")).scalar_one() > 0
        for statement in (
            "TRUNCATE audit_entries",
            "TRUNCATE orders CASCADE",
            "UPDATE audit_entries SET actor = 'admin:mallory'",
            "DELETE FROM audit_entries",
            "DELETE FROM audit_anchors",
            "UPDATE audit_anchor_heads SET hash = 'x'",
            "DELETE FROM alembic_version",
        ):
            assert "permission denied" in _refused(app, statement), statement
        for statement in (
            "DROP TABLE audit_entries",
            "ALTER TABLE audit_entries DISABLE TRIGGER ALL",
            "DROP TRIGGER IF EXISTS audit_entries_append_only ON audit_entries",
        ):
            assert "must be owner" in _refused(app, statement), statement
        assert "permission denied for schema" in _refused(app, "CREATE TABLE mine (x int)")
        assert "permission denied" in _refused(app, "SET session_replication_role = replica")
    finally:
        app.dispose()


def test_grant_refuses_to_make_the_owner_the_service_role(roles: Roles) -> None:
    """Granting the tables' owner as the service role is refused: an owner can TRUNCATE."""
    result = CliRunner().invoke(
        main,
        ["db", "grant", "--role", "postgres", "--no-create"],
        env={"ORDERFLOW_DATABASE_URL": roles.owner_url},
    )
    assert result.exit_code == 1
    assert "role postgres owns tables" in result.output
