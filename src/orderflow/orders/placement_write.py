"""How a placement group's rows reach the database, and its stock is taken.

PostgreSQL: one statement for everything, whatever the group's size: a data-modifying CTE per
table, each inserting its rows from arrays (`INSERT … SELECT … FROM unnest(%s::type[], …)`, a
fixed text that psycopg prepares once), then the stock UPDATE. One round trip, so the stock
rows, locked by that UPDATE, stay locked only from here to COMMIT. Foreign keys between the
CTEs' rows hold: PostgreSQL checks them at the end of the statement.

Elsewhere (SQLite): one executemany per table, then the UPDATE. SQLite's single writer lock
makes the number of statements matter far less there.

Stock is taken relatively (stock - n), so concurrent placements compose, and the rows are
locked in SKU order (no two placements wait on each other in opposite orders); the CHECK
(stock >= 0) refuses an oversold group whole (IntegrityError: the caller retries it with the
stock locked as it is read).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import JSON, Select, Table, case, insert, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from orderflow.db import UTCDateTime

Rows = list[tuple[Table, list[dict[str, Any]]]]


def locked(query: Select[Any], products: Table) -> Select[Any]:
    """Lock the product rows in SKU order. FOR NO KEY UPDATE (what an UPDATE takes) still lets
    order lines that refer to these products be inserted meanwhile. SQLite: BEGIN IMMEDIATE's
    write lock covers it."""
    return query.order_by(products.c.sku).with_for_update(key_share=True)


def write(session: Session, rows: Rows, products: Table, taken: dict[str, int]) -> None:
    """Insert `rows` (table, rows with the same keys) and take `taken` (sku -> quantity)."""
    if session.get_bind().dialect.name == "postgresql":
        _write_postgresql(session, rows, products, taken)
        return
    for table, table_rows in rows:
        session.execute(insert(table), table_rows)
    p = products.c
    locked_rows = locked(select(p.sku).where(p.sku.in_(list(taken))), products).subquery()
    session.execute(
        update(products)
        .where(p.sku == locked_rows.c.sku)
        .values(stock=p.stock - case(taken, value=p.sku))
    )


def _write_postgresql(session: Session, rows: Rows, products: Table, taken: dict[str, int]) -> None:
    params: dict[str, Any] = {"stock_sku": list(taken), "stock_n": list(taken.values())}
    ctes = []
    for table, table_rows in rows:
        columns = tuple(table_rows[0])
        ctes.append(_insert_cte(table, columns))
        for column in columns:
            params[f"{table.name}_{column}"] = [
                _value(table, column, row[column]) for row in table_rows
            ]
    sql = (
        f"WITH {', '.join(ctes)} "
        f"UPDATE {products.name} SET stock = {products.name}.stock - d.n FROM ("
        f"SELECT p.sku, u.n FROM {products.name} p "
        "JOIN unnest(%(stock_sku)s::varchar[], %(stock_n)s::integer[]) AS u(sku, n) "
        "ON p.sku = u.sku ORDER BY p.sku FOR NO KEY UPDATE OF p"
        f") AS d WHERE {products.name}.sku = d.sku"
    )
    session.connection().exec_driver_sql(sql, params)


@cache
def _insert_cte(table: Table, columns: tuple[str, ...]) -> str:
    arrays, selected = [], []
    for column in columns:
        kind = table.c[column].type
        if isinstance(kind, JSON):
            arrays.append(f"%({table.name}_{column})s::text[]")
            selected.append(f"u.{column}::json")
        else:
            name = kind.compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
            arrays.append(f"%({table.name}_{column})s::{name}[]")
            selected.append(f"u.{column}")
    return (
        f"w_{table.name} AS (INSERT INTO {table.name} ({', '.join(columns)}) "
        f"SELECT {', '.join(selected)} FROM unnest({', '.join(arrays)}) "
        f"AS u({', '.join(columns)}))"
    )


def _value(table: Table, column: str, value: Any) -> Any:
    """What the column's SQLAlchemy type would have sent (JSON text, naive UTC timestamps)."""
    kind = table.c[column].type
    if isinstance(kind, JSON):
        return json.dumps(value)
    if isinstance(kind, UTCDateTime) and isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)
    return value
