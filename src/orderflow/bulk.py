"""New rows for several tables, written in one round trip on PostgreSQL.

PostgreSQL: one statement whatever the number of rows and tables: a data-modifying CTE per
table, each inserting its rows from one JSON array (`INSERT … SELECT … FROM
json_populate_recordset(NULL::table, %s)`, a fixed text per set of columns that psycopg
prepares once). The rows cross as one `json.dumps` per table (C), not as a parameter set per
row that SQLAlchemy and psycopg each process in Python. Foreign keys between the CTEs' rows
hold: PostgreSQL checks them at the end of the statement.

Elsewhere (SQLite): one executemany per table; its single writer makes round trips cheap.

Python-side column defaults (`default=now`) are filled in here for the keys a row leaves out,
as SQLAlchemy's INSERT would; timestamps travel as naive UTC, as `UTCDateTime` stores them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import Table, bindparam, insert, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

Rows = Sequence[tuple[Table, list[dict[str, Any]]]]


def insert_rows(session: Session, tables: Rows) -> None:
    """Insert each table's rows (the rows of one table may leave out different defaults)."""
    tables = [(table, rows) for table, rows in tables if rows]
    if not tables:
        return
    if session.get_bind().dialect.name != "postgresql":
        for table, rows in tables:
            session.connection().execute(insert(table), rows)
        return
    ctes, params = [], {}
    for table, rows in tables:
        rows = _with_defaults(table, rows)
        ctes.append(insert_cte(table.name, tuple(rows[0])))
        params[table.name] = json.dumps(rows, default=naive_utc)
    body = ", ".join(ctes)
    session.connection().exec_driver_sql(f"WITH {body} SELECT 1", params)


def insert_ignoring(
    session: Session, table: Table, rows: list[dict[str, Any]], key: str, *, returning: bool
) -> set[Any]:
    """INSERT these rows, skipping those whose unique `key` exists; with `returning`, the keys
    this call inserted. On PostgreSQL one statement fed by one JSON array, as `insert_rows`."""
    if not rows:
        return set()
    if session.get_bind().dialect.name != "postgresql":
        stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=[key])
        if not returning:
            session.connection().execute(stmt, rows)
            return set()
        return set(session.connection().execute(stmt.returning(table.c[key]), rows).scalars())
    rows = _with_defaults(table, rows)
    sql = _insert_ignoring_sql(table.name, tuple(rows[0]), key, returning)
    result = session.connection().exec_driver_sql(
        sql, {"rows": json.dumps(rows, default=naive_utc)}
    )
    return set(result.scalars()) if returning else set()


@cache
def _insert_ignoring_sql(table: str, columns: tuple[str, ...], key: str, returning: bool) -> str:
    names = ", ".join(columns)
    return (
        f"INSERT INTO {table} ({names}) SELECT {names} "
        f"FROM json_populate_recordset(NULL::{table}, %(rows)s::json) "
        f"ON CONFLICT ({key}) DO NOTHING" + (f" RETURNING {key}" if returning else "")
    )


def update_by_key(
    session: Session, table: Table, rows: list[dict[str, Any]], key: str, *, status: str
) -> None:
    """Set each row's other columns on the row of `table` with its `key`, where that row's
    status is still `status`. On PostgreSQL one statement fed by one JSON array."""
    if not rows:
        return
    columns = [c for c in rows[0] if c != key]
    if session.get_bind().dialect.name != "postgresql":
        stmt = (
            update(table)
            .where(table.c[key] == bindparam(f"b_{key}"))
            .where(table.c.status == status)
            .values({c: bindparam(f"b_{c}") for c in columns})
        )
        session.connection().execute(stmt, [{f"b_{k}": v for k, v in r.items()} for r in rows])
        return
    sql = _update_by_key_sql(table.name, tuple(columns), key)
    session.connection().exec_driver_sql(
        sql, {"rows": json.dumps(rows, default=naive_utc), "status": str(status)}
    )


@cache
def _update_by_key_sql(table: str, columns: tuple[str, ...], key: str) -> str:
    sets = ", ".join(f"{c} = v.{c}" for c in columns)
    return (
        f"UPDATE {table} SET {sets} "
        f"FROM json_populate_recordset(NULL::{table}, %(rows)s::json) AS v "
        f"WHERE {table}.{key} = v.{key} AND {table}.status = %(status)s"
    )


def _with_defaults(table: Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every row with the same keys: those left out get their column's Python default."""
    keys = {key for row in rows for key in row}
    missing = [
        c
        for c in table.columns
        if c.key not in keys and c.default is not None and not c.primary_key
    ]
    partial = [k for k in keys if any(k not in row for row in rows)]
    if not missing and not partial:
        return rows
    filled = []
    for row in rows:
        row = dict(row)
        for key in partial:
            if key not in row:
                row[key] = _default(table, key)
        for column in missing:
            row[column.key] = _default(table, column.key)
        filled.append(row)
    return filled


def _default(table: Table, key: str) -> Any:
    default = table.columns[key].default
    if default is None:
        return None
    arg = getattr(default, "arg", None)
    return arg(None) if callable(arg) else arg


@cache
def insert_cte(table: str, columns: tuple[str, ...]) -> str:
    names = ", ".join(columns)
    return (
        f"w_{table} AS (INSERT INTO {table} ({names}) "
        f"SELECT {names} FROM json_populate_recordset(NULL::{table}, %({table})s::json))"
    )


def naive_utc(value: Any) -> str:
    """Timestamps as UTCDateTime stores them: naive UTC (the columns have no time zone)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:  # as UTCDateTime refuses them: local time would pass silently
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC).replace(tzinfo=None).isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
