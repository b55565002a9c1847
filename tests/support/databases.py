"""Real test databases: a migrated SQLite file per test, a migrated PostgreSQL database per run."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import psycopg
from sqlalchemy import text

from orderflow.db import Database
from orderflow.migrate import upgrade
from orderflow.schema import metadata

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN_DSN, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def create_pg_database() -> str:
    name = f"orderflow_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_url(name: str) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def migrated_sqlite_template(directory: Path) -> Path:
    path = directory / "template.db"
    db = Database(f"sqlite:///{path}")
    upgrade(db.engine)
    db.dispose()
    return path


def fresh_sqlite(template: Path, directory: Path) -> str:
    path = directory / "orderflow.db"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


def truncate_all(db: Database) -> None:
    tables = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with db.engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
