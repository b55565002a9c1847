"""How a placement group's rows reach the database, and its stock is taken.

PostgreSQL: one statement for everything, whatever the group's size: a data-modifying CTE per
table, each inserting its rows from one JSON array (`INSERT … SELECT … FROM
json_populate_recordset(NULL::table, %s)`, a fixed text that psycopg prepares once), then the
stock UPDATE. One round trip, so the stock
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
from typing import Any

from sqlalchemy import Select, Table, case, insert, select, update
from sqlalchemy.orm import Session

from orderflow.bulk import insert_cte, naive_utc

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
    # Each table's rows travel as one JSON array (json.dumps is C; psycopg's array dumping is
    # a Python loop per element), turned back into typed rows by json_populate_recordset.
    params: dict[str, Any] = {"stock_sku": list(taken), "stock_n": list(taken.values())}
    ctes = []
    for table, table_rows in rows:
        columns = tuple(table_rows[0])
        ctes.append(insert_cte(table.name, columns))
        params[table.name] = json.dumps(table_rows, default=naive_utc)
    sql = (
        f"WITH {', '.join(ctes)} "
        f"UPDATE {products.name} SET stock = {products.name}.stock - d.n FROM ("
        f"SELECT p.sku, u.n FROM {products.name} p "
        "JOIN unnest(%(stock_sku)s::varchar[], %(stock_n)s::integer[]) AS u(sku, n) "
        "ON p.sku = u.sku ORDER BY p.sku FOR NO KEY UPDATE OF p"
        f") AS d WHERE {products.name}.sku = d.sku"
    )
    session.connection().exec_driver_sql(sql, params)
