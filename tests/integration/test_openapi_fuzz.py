"""The API keeps to its own OpenAPI document under fuzzing (schemathesis, over real HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from orderflow.config import Settings
from orderflow.db import Database
from orderflow.serving import BackgroundServer
from orderflow.web.app import create_app
from tests.support.stack import ADDRESS

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _seed(url: str) -> None:
    """A customer, a product and an order, so that generated ids and SKUs sometimes exist."""
    customer = {"name": "Ada", "email": "ada@example.com", "address": ADDRESS}
    with httpx.Client(base_url=f"{url}/api/v1", headers=AUTH, timeout=10) as api:
        made = api.post("/customers", json={**customer, "payment_method": "pm_ok_visa"})
        assert made.status_code == 201, made.text
        product = {"sku": "A", "name": "A", "price": 100, "currency": "GBP", "weight_grams": 1}
        assert api.post("/products", json={**product, "stock": 1000}).status_code == 201
        order = {"customer_id": made.json()["id"], "lines": [{"sku": "A", "quantity": 1}]}
        assert api.post("/orders", json=order).status_code == 202


@pytest.fixture
def api_schema(database_url: str) -> Iterator[Any]:
    db = Database(database_url)
    app_settings = Settings(
        _env_file=None,
        database_url=database_url,
        admin_token=TOKEN,
        bobs_post_webhook_secret="fuzz-secret",
    )
    with BackgroundServer(create_app(app_settings, db)) as server:
        _seed(server.url)
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        yield schema
    db.dispose()


EXAMPLES = 10  # per operation and mode: a fixed budget (2 modes, ~22 operations)
CHECKS = [not_a_server_error, status_code_conformance]


def _fuzz_operation(operation: Any, mode: GenerationMode, failures: list[str]) -> None:
    """EXAMPLES generated cases against one operation; each failure appended as a line."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,  # the same cases every run
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        try:
            case.call_and_validate(headers=AUTH, checks=CHECKS, timeout=10)
        except (Exception, BaseExceptionGroup) as exc:  # collected: one report for all
            failures.append(f"{operation.label} [{mode.value}]: {exc}")

    try:
        run()
    except Unsatisfiable:  # nothing to negate (no parameters, no body): nothing to send
        assert mode == GenerationMode.NEGATIVE, operation.label


def test_no_server_error_and_no_undocumented_status(api_schema: Any) -> None:
    """Generated valid and invalid requests to every operation, with a valid token: never a
    5xx, and every status the API answers is one its OpenAPI document declares."""
    failures: list[str] = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for result in api_schema.get_all_operations():
            _fuzz_operation(result.ok(), mode, failures)
    assert not failures, "\n\n".join(failures)
