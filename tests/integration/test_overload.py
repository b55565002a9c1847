"""Overload is honest: a busy database pool is a prompt 503 + Retry-After, not a 500 or a hang."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from sqlalchemy import text

from orderflow.config import Settings
from orderflow.db import Database
from orderflow.serving import BackgroundServer
from orderflow.web.app import create_app
from tests.support.stack import ADDRESS

HEADERS = {"Authorization": "Bearer t", "Content-Type": "application/json"}


@pytest.fixture
def small_pool(database_url: str) -> Iterator[tuple[Database, BackgroundServer]]:
    """The API on a pool of two connections that gives up after 0.3 s; bodies up to 4 KiB."""
    db = Database(database_url, pool_size=2, max_overflow=0, pool_timeout=0.3)
    settings = Settings(
        _env_file=None, database_url=database_url, admin_token="t", max_body_bytes=4096
    )
    with BackgroundServer(create_app(settings, db)) as server:
        yield db, server
    db.dispose()


def _call(
    conn: http.client.HTTPConnection, method: str, path: str, body: object = None
) -> tuple[http.client.HTTPResponse, dict[str, object]]:
    conn.request(method, path, None if body is None else json.dumps(body), HEADERS)
    response = conn.getresponse()
    return response, json.loads(response.read() or b"{}")


def test_exhausted_pool_answers_503_with_retry_after_at_once_and_keeps_the_connection(
    small_pool: tuple[Database, BackgroundServer],
) -> None:
    """With every connection taken: 503 + Retry-After within a second, same socket reusable."""
    db, server = small_pool
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    _, customer = _call(
        conn,
        "POST",
        "/api/v1/customers",
        {"name": "A", "email": "a@example.com", "address": ADDRESS, "payment_method": "pm_ok"},
    )
    product = {"sku": "W", "name": "W", "price": 100, "currency": "GBP", "weight_grams": 1}
    _call(conn, "POST", "/api/v1/products", {**product, "stock": 10})
    order = {"customer_id": customer["id"], "lines": [{"sku": "W", "quantity": 1}]}
    socket_before = conn.sock
    with ExitStack() as held:
        for _ in range(2):  # checked out of the pool (no transaction: SQLite stays writable)
            held.enter_context(db.engine.connect())
        for method, path, body in (
            ("POST", "/api/v1/orders", order),
            ("GET", "/api/v1/orders/1", None),
            ("POST", "/api/v1/orders/batch", {"orders": [{**order, "idempotency_key": "k"}]}),
        ):
            started = time.monotonic()
            response, error = _call(conn, method, path, body)
            assert response.status == 503, (path, error)
            assert time.monotonic() - started < 2.0, (path, time.monotonic() - started)
            assert int(response.headers["Retry-After"]) >= 1
            assert error["error"]["code"] == "busy"  # type: ignore[index]
            assert response.headers.get("Connection", "").lower() != "close"
            assert conn.sock is socket_before  # keep-alive: the same connection answers again
    response, placed = _call(conn, "POST", "/api/v1/orders", order)
    assert response.status == 202, placed
    assert conn.sock is socket_before
    conn.close()


def test_a_body_over_the_limit_is_refused_with_413_and_places_nothing(
    small_pool: tuple[Database, BackgroundServer],
) -> None:
    """Declared or streamed, a body over the limit is a JSON 413, never a 500 or a read."""
    db, server = small_pool
    orders = [{"idempotency_key": f"k{i}", "customer_id": 1, "lines": []} for i in range(200)]
    body = json.dumps({"orders": orders}).encode()
    assert len(body) > 4096
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", "/api/v1/orders/batch", body, HEADERS)
    declared = conn.getresponse()
    assert declared.status == 413
    assert json.loads(declared.read())["error"]["code"] == "body_too_large"
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request(
        "POST",
        "/api/v1/orders/batch",
        iter([body[:3000], body[3000:]]),
        HEADERS,
        encode_chunked=True,
    )
    streamed = conn.getresponse()
    assert streamed.status == 413
    assert json.loads(streamed.read())["error"]["code"] == "body_too_large"
    conn.close()
    with db.read() as session:
        assert session.execute(text("SELECT count(*) FROM orders")).scalar_one() == 0
