"""Least privilege on PostgreSQL: the service runs as a role that can only do what it needs.

Migrations run as the role that owns the tables (`orderflow migrate`); `serve`, `worker` and
`intake` run as an application role that `orderflow db grant --role NAME` creates (or updates)
and grants, run as that owner after each migration:

- every table: SELECT, INSERT, UPDATE, DELETE — except
- the history (`HISTORY`): SELECT and INSERT only, so neither UPDATE nor DELETE (the triggers
  refuse them too), nor any way around the triggers;
- `alembic_version`: SELECT only (serve and worker check the schema);
- sequences: USAGE and SELECT (new ids);
- nothing else: the role owns nothing, so it can neither TRUNCATE (which fires no row trigger),
  ALTER nor DROP a table, and it has no CREATE on the schema.

`orderflow db grant --sql` prints the statements instead, for a DBA to run. Retention of the
history (`orderflow audit archive`, which deletes archived entries) runs as the owner.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text

from orderflow import redaction

HISTORY = (
    "audit_entries",
    "audit_anchors",
    "audit_anchor_heads",
    "audit_archives",
    "audit_archived",
)
READ_ONLY = ("alembic_version",)


class PrivilegeError(Exception):
    """The setup asked for cannot give least privilege (said in one sentence for people)."""


@dataclass(frozen=True)
class Plan:
    role: str
    statements: list[str]


def _quote(connection: Connection, name: str) -> str:
    return connection.dialect.identifier_preparer.quote_identifier(name)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def plan(connection: Connection, role: str, *, password: str | None, create: bool) -> Plan:
    """The statements that give `role` exactly the service's privileges in this database."""
    if connection.dialect.name != "postgresql":
        raise PrivilegeError("roles and grants are for PostgreSQL (SQLite has no roles)")
    schema = str(connection.execute(text("SELECT current_schema()")).scalar_one())
    database = str(connection.execute(text("SELECT current_database()")).scalar_one())
    tables = [
        str(name)
        for name in connection.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = :s ORDER BY tablename"),
            {"s": schema},
        ).scalars()
    ]
    if "alembic_version" not in tables:
        raise PrivilegeError("the schema is not there yet: run `orderflow migrate` first")
    owned = connection.execute(
        text("SELECT tablename FROM pg_tables WHERE schemaname = :s AND tableowner = :r"),
        {"s": schema, "r": role},
    ).all()
    if owned:
        raise PrivilegeError(
            f"role {role} owns tables (e.g. {owned[0][0]}): an owner can TRUNCATE, ALTER and "
            "DROP them; keep it for migrations and grant a different role for the service"
        )
    exists = connection.execute(
        text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}
    ).first()
    if exists is None and not create:
        raise PrivilegeError(f"role {role} does not exist (drop --no-create to create it)")
    r, s = _quote(connection, role), _quote(connection, schema)
    statements: list[str] = []
    login = "LOGIN" + (f" PASSWORD {_literal(password)}" if password else "")
    if exists is None:
        statements.append(f"CREATE ROLE {r} {login}")
    elif password:
        statements.append(f"ALTER ROLE {r} {login}")
    statements += [
        f"GRANT CONNECT ON DATABASE {_quote(connection, database)} TO {r}",
        f"GRANT USAGE ON SCHEMA {s} TO {r}",
        f"REVOKE CREATE ON SCHEMA {s} FROM {r}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {r}",
    ]
    for table in tables:
        name = f"{s}.{_quote(connection, table)}"
        if table in HISTORY:
            statements.append(f"GRANT SELECT, INSERT ON TABLE {name} TO {r}")
        elif table in READ_ONLY:
            statements.append(f"GRANT SELECT ON TABLE {name} TO {r}")
        else:
            statements.append(f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE {name} TO {r}")
    statements += [
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {s} FROM {r}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
    ]
    return Plan(role, statements)


def grant(engine: Engine, role: str, *, password: str | None = None, create: bool = True) -> Plan:
    """Create (or update) `role` with the service's privileges, in one transaction; then
    check that it can create nothing in the schema."""
    if password:
        redaction.remember(password)  # a failed statement's error quotes it
    with engine.begin() as connection:
        made = plan(connection, role, password=password, create=create)
        for statement in made.statements:
            connection.exec_driver_sql(statement.replace("%", "%%"))
        can_create = connection.execute(
            text("SELECT has_schema_privilege(:r, current_schema(), 'CREATE')"), {"r": role}
        ).scalar_one()
    if can_create:
        raise PrivilegeError(
            f"role {role} can still create tables in the schema (granted to PUBLIC): run "
            "`REVOKE CREATE ON SCHEMA public FROM PUBLIC` as its owner (PostgreSQL 15 and later "
            "do so by default)"
        )
    return made


def runs_as_owner(engine: Engine) -> str | None:
    """On PostgreSQL, the role we connect as when it owns the history tables (then TRUNCATE
    and DROP are possible whatever the triggers say), else None."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT current_user FROM pg_tables WHERE tablename = 'audit_entries' "
                "AND schemaname = current_schema() AND tableowner = current_user"
            )
        ).first()
    return None if row is None else str(row[0])
