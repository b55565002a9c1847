"""The command line and the schema: migrations match the models, bad setups fail clearly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from orderflow.config import Settings
from orderflow.db import Database
from orderflow.schema import metadata
from orderflow.web.app import create_app
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


def test_a_malformed_or_unsupported_database_url_is_one_clear_line(tmp_path: Path) -> None:
    """Unparseable, another database, an unknown driver or a bad port: the variable is named,
    the URL (which may hold a password) is not echoed, no traceback, non-zero exit."""
    for url in (
        "not a url",
        "mysql://u:s3cret@db/orderflow",
        "postgresql+asyncpg://u:s3cret@db/orderflow",
        "postgresql+psycopg://u:s3cret@db:port/orderflow",
        "sqlite+nosuchdriver:///x.db",
    ):
        for command in ("migrate", "worker"):
            result = _orderflow(command, ORDERFLOW_DATABASE_URL=url)
            assert result.returncode != 0, (url, command)
            assert "ORDERFLOW_DATABASE_URL" in result.stderr, (url, result.stderr)
            assert "Traceback" not in result.stderr and "s3cret" not in result.stderr, url
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_demo_on_a_busy_port_fails_before_announcing_itself(tmp_path: Path) -> None:
    """With the port taken, `orderflow demo` says so in one line and exits non-zero, without
    first printing 'orderflow demo is running.' and a link that leads elsewhere."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = _orderflow(
            "demo", "--port", str(port), ORDERFLOW_DATABASE_URL=f"sqlite:///{tmp_path}/demo.db"
        )
    assert result.returncode != 0
    assert "is running" not in result.stdout and "console:" not in result.stdout
    assert f"127.0.0.1:{port}" in result.stderr and "in use" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_openapi_declares_errors_bearer_security_and_links(tmp_path: Path) -> None:
    """Every /api/v1 operation lists 401 and 503 with the JSON error body; the token is a
    bearer security scheme (not an optional header parameter); created things link to their
    read operation."""
    url = f"sqlite:///{tmp_path}/openapi.db"
    app = create_app(Settings(_env_file=None, database_url=url, admin_token="t"), Database(url))
    spec = app.openapi()
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <token>`: a personal token or ORDERFLOW_ADMIN_TOKEN",
    }
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            params = [p["name"].lower() for p in operation.get("parameters", [])]
            assert "authorization" not in params, where
            responses = operation["responses"]
            assert not any(s.startswith("5") and s != "503" for s in responses), where
            for status, response in responses.items():
                if path.startswith(("/api/", "/webhooks/")) and status[0] in "45":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == error_ref, (where, status)
            if path.startswith("/api/v1/"):
                assert operation["security"] == [{"bearerAuth": []}], where
                assert {"401", "503"} <= set(responses), where
            if method in ("post", "patch") and path.startswith("/api/v1/"):
                assert {"413", "422"} <= set(responses), where
    placed = spec["paths"]["/api/v1/orders"]["post"]["responses"]
    assert {"409", "429"} <= set(placed)
    link = placed["202"]["links"]["GetOrder"]
    assert link["operationRef"] == "#/paths/~1api~1v1~1orders~1{order_id}/get"
    assert link["parameters"] == {"order_id": "$response.body#/id"}
    for path, name in (("/api/v1/customers", "GetCustomer"), ("/api/v1/products", "GetProduct")):
        assert name in spec["paths"][path]["post"]["responses"]["201"]["links"], path
    assert "404" in spec["paths"]["/api/v1/orders/{order_id}"]["get"]["responses"]
