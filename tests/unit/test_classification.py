"""Outside HTTP answers are classified once: transient (retry) or permanent (dead letter)."""

from __future__ import annotations

import httpx
import pytest

from orderflow.http import raise_for_status
from orderflow.tasks.errors import ErrorClass, PermanentError, TransientError, classify


def _response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    request = httpx.Request("POST", "http://carrier.test/v1/shipments")
    return httpx.Response(
        status, headers=headers, json={"error": {"message": "m"}}, request=request
    )


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_server_trouble_and_rate_limits_are_transient(status: int) -> None:
    """5xx, 408 and 429 are retried."""
    with pytest.raises(TransientError) as caught:
        raise_for_status(_response(status), "Bob's Post")
    assert caught.value.http_status == status
    assert classify(caught.value) is ErrorClass.TRANSIENT


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422])
def test_client_errors_are_permanent(status: int) -> None:
    """Other 4xx would fail the same way again: permanent."""
    with pytest.raises(PermanentError):
        raise_for_status(_response(status), "Bob's Post")


def test_retry_after_is_read() -> None:
    """429 with Retry-After carries the server's wait; a date form is ignored."""
    with pytest.raises(TransientError) as caught:
        raise_for_status(_response(429, {"Retry-After": "7"}), "Bob's Post")
    assert caught.value.retry_after == 7.0
    with pytest.raises(TransientError) as dated:
        raise_for_status(_response(503, {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}), "x")
    assert dated.value.retry_after is None


def test_success_passes_and_bugs_are_poison() -> None:
    """2xx raises nothing; an exception of our own (a bug) classifies as poison."""
    raise_for_status(_response(201), "Bob's Post")
    assert classify(KeyError("id")) is ErrorClass.POISON
