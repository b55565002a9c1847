"""The shared edge of every outside HTTP API: one client per API, and one classification.

This is the only place that decides what an HTTP outcome means for retrying:
timeouts and connection errors, 408, 429 and 5xx are transient (429/503 may say Retry-After);
every other 4xx is permanent. A timeout is ambiguous (the call may have happened): the step
repeats it with the same idempotency key, or looks the result up, never guesses.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from orderflow.tasks.errors import NOT_PROCESSED_STATUSES, PermanentError, TransientError

TRANSIENT_STATUSES = frozenset({408, 425, 429})


def make_client(base_url: str, api_key: str, timeout: float) -> httpx.Client:
    return httpx.Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {api_key}", "User-Agent": "orderflow/0.1"},
        timeout=timeout,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
    )


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP-date; our own backoff applies


def error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        error = body.get("error", {}) if isinstance(body, dict) else {}
        text = error.get("message") or error.get("code") or response.text[:200]
    except ValueError:
        text = response.text[:200]
    return f"HTTP {response.status_code}: {text}"


def raise_for_status(response: httpx.Response, api: str) -> None:
    """Raise the classified error for a non-2xx answer."""
    status = response.status_code
    if status < 300:
        return
    message = f"{api} {response.request.method} {response.request.url.path}: " + error_message(
        response
    )
    if status >= 500 or status in TRANSIENT_STATUSES:
        raise TransientError(
            message,
            http_status=status,
            retry_after=retry_after(response),
            may_have_happened=status not in NOT_PROCESSED_STATUSES,
        )
    raise PermanentError(message, http_status=status)


@contextmanager
def transport_errors(api: str) -> Iterator[None]:
    """Network failures are transient; a timeout is ambiguous, which retrying resolves."""
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        # Never connected: the request cannot have had any effect.
        raise TransientError(
            f"{api}: {type(exc).__name__}: {exc}", may_have_happened=False
        ) from exc
    except httpx.TimeoutException as exc:
        raise TransientError(f"{api}: timed out ({type(exc).__name__}); outcome unknown") from exc
    except httpx.TransportError as exc:
        raise TransientError(f"{api}: {type(exc).__name__}: {exc}") from exc


def json_body(response: httpx.Response, api: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise TransientError(f"{api}: unreadable answer ({response.status_code})") from exc
