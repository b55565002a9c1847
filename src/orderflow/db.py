"""Engine and session factories, SQLite pragmas, the declarative base and its column types."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Table,
    create_engine,
    event,
    make_url,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

from orderflow import bulk

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# 64-bit ids on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is an alias of the rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")
MAX_ID = 2**63 - 1  # ids are BIGINT on PostgreSQL, INTEGER (64-bit) on SQLite


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, hands back aware UTC: the same on SQLite and PostgreSQL."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def make_engine(
    url: str, *, pool_size: int = 10, pool_timeout: float = 30.0, max_overflow: int | None = None
) -> Engine:
    """`pool_timeout`: how long a request waits for a free connection before the pool raises
    `sqlalchemy.exc.TimeoutError` (the API answers it with 503 + Retry-After). PostgreSQL's
    pool allows `pool_size` more connections than its size (`max_overflow`) unless told;
    SQLite keeps SQLAlchemy's default pool unless `max_overflow` is given."""
    if url.startswith("sqlite"):
        in_memory = make_url(url).database in (None, "", ":memory:")  # one connection, no queue
        pooling: dict[str, Any] = {} if in_memory else {"pool_timeout": pool_timeout}
        if max_overflow is not None and not in_memory:
            pooling.update(pool_size=pool_size, max_overflow=max_overflow)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **pooling
        )
        _make_sqlite_transactional(engine)
        return engine
    if pool_size == 0:
        return create_engine(url, poolclass=NullPool)
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_pre_ping=True,
        pool_timeout=pool_timeout,
    )


def _make_sqlite_transactional(engine: Engine) -> None:
    """WAL, foreign keys, and BEGIN IMMEDIATE so two writers queue instead of deadlocking."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Read-only sessions (see Database.read) begin DEFERRED and never take the write lock;
        # an AUTOCOMMIT connection begins nothing (each statement is its own transaction).
        options = connection.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return
        readonly = options.get("orderflow_readonly", False)
        connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def insert_ignore(session: Session, model: type[Base], values: dict[str, Any], key: str) -> bool:
    """INSERT unless a row with the same unique `key` exists; True if this call inserted it."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(model).values(values).on_conflict_do_nothing(index_elements=[key])
    # RETURNING, not rowcount: an ORM-enabled INSERT on psycopg reports rowcount -1.
    column = model.__table__.c[key]
    return session.execute(stmt.returning(column)).first() is not None


def insert_ignore_many(
    session: Session, model: type[Base], rows: list[dict[str, Any]], key: str
) -> set[Any]:
    """INSERT these rows, skipping those whose unique `key` exists; returns the keys this call
    inserted (one statement; see `bulk.insert_ignoring`)."""
    table = model.__table__
    assert isinstance(table, Table)
    return bulk.insert_ignoring(session, table, rows, key, returning=True)


def allocate_ids(session: Session, table: str, count: int) -> list[int]:
    """Reserve `count` new primary keys of `table` (id column), so that rows referring to
    them can be written in the same round of set-based INSERTs as the rows themselves.

    PostgreSQL: from the column's sequence (never handed out twice). SQLite: after the
    largest id, which is safe because the write transaction (BEGIN IMMEDIATE) already holds
    the database's one write lock until it commits.
    """
    if count == 0:
        return []
    if session.get_bind().dialect.name == "postgresql":
        rows = session.execute(
            text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"),
            {"t": table, "n": count},
        ).scalars()
        return sorted(int(i) for i in rows)
    last = session.execute(text(f"SELECT coalesce(max(id), 0) FROM {table}")).scalar_one()
    return list(range(int(last) + 1, int(last) + 1 + count))


class Database:
    """The engine plus two session factories: one that writes, one that only reads."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        pool_timeout: float = 30.0,
        max_overflow: int | None = None,
    ) -> None:
        self.url = url
        self.engine = make_engine(
            url, pool_size=pool_size, pool_timeout=pool_timeout, max_overflow=max_overflow
        )
        self._writer = sessionmaker(self.engine, expire_on_commit=False)
        self._reader = sessionmaker(
            self.engine.execution_options(orderflow_readonly=True), expire_on_commit=False
        )

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on any exception."""
        with self._writer.begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session:  # closing the session rolls back its read transaction
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
