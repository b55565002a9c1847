"""The command line and the schema: migrations match the models, bad setups fail clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from orderflow.db import Database
from orderflow.schema import metadata
from tests.support.stack import Stack


def _orderflow(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "orderflow", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )


def test_migrations_produce_exactly_the_models_schema(db: Database) -> None:
    """Alembic finds nothing to change between the migrated database and the models."""
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), metadata)
    assert diff == []


def test_migrate_creates_and_then_keeps_the_schema(tmp_path: Path) -> None:
    """`orderflow migrate` on an empty file creates the schema; a second run changes nothing."""
    url = f"sqlite:///{tmp_path}/new.db"
    first = _orderflow("migrate", ORDERFLOW_DATABASE_URL=url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("schema: empty ->")
    second = _orderflow("migrate", ORDERFLOW_DATABASE_URL=url)
    assert second.returncode == 0
    assert "empty" not in second.stdout


def test_worker_and_serve_refuse_an_outdated_schema(tmp_path: Path) -> None:
    """On an unmigrated database both refuse with one clear line, no traceback."""
    url = f"sqlite:///{tmp_path}/old.db"
    env = {
        "ORDERFLOW_DATABASE_URL": url,
        "ORDERFLOW_ADMIN_TOKEN": "t",
        "ORDERFLOW_BOBS_POST_WEBHOOK_SECRET": "s",
        "ORDERFLOW_BOBS_POST_URL": "http://127.0.0.1:9",
        "ORDERFLOW_PAYDESK_URL": "http://127.0.0.1:9",
        "ORDERFLOW_SMTP_URL": "smtp://127.0.0.1:9",
    }
    for command in ("worker", "serve"):
        result = _orderflow(command, **env)
        assert result.returncode != 0
        assert "orderflow migrate" in result.stderr
        assert "Traceback" not in result.stderr


def test_bad_configuration_is_reported_without_a_traceback(tmp_path: Path) -> None:
    """A malformed knob, a missing token or a missing outside address: one clear message."""
    url = f"sqlite:///{tmp_path}/x.db"
    assert _orderflow("migrate", ORDERFLOW_DATABASE_URL=url).returncode == 0
    bad = _orderflow("worker", ORDERFLOW_DATABASE_URL=url, ORDERFLOW_LEASE_SECONDS="soon")
    assert bad.returncode != 0 and "ORDERFLOW_LEASE_SECONDS" in bad.stderr
    tight = _orderflow(
        "worker",
        ORDERFLOW_DATABASE_URL=url,
        ORDERFLOW_LEASE_SECONDS="5",
        ORDERFLOW_HTTP_TIMEOUT_SECONDS="10",
    )
    assert tight.returncode != 0 and "twice" in tight.stderr
    no_token = _orderflow("serve", ORDERFLOW_DATABASE_URL=url)
    assert no_token.returncode != 0 and "ORDERFLOW_ADMIN_TOKEN" in no_token.stderr
    no_carrier = _orderflow("worker", ORDERFLOW_DATABASE_URL=url)
    assert no_carrier.returncode != 0 and "ORDERFLOW_PAYDESK_URL" in no_carrier.stderr
    for result in (bad, tight, no_token, no_carrier):
        assert "Traceback" not in result.stderr


def test_health_and_readiness(stack: Stack) -> None:
    """/healthz says the process is up; /readyz says the database is reachable and current."""
    assert httpx.get(f"{stack.server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{stack.server.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_openapi_is_served(stack: Stack) -> None:
    """The API documents itself at /openapi.json, including the order endpoints."""
    spec = httpx.get(f"{stack.server.url}/openapi.json").json()
    assert "/api/v1/orders" in spec["paths"]
    assert "/webhooks/bobs-post" in spec["paths"]
