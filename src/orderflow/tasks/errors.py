"""How a failed step is classified, once, at the adapter edge.

Transient: retried with backoff (timeouts, connection errors, 5xx, 429).
Permanent: retrying the same request can never succeed (4xx validation, conflicts) → dead letter.
Poison: anything else (a bug, an unreadable payload) → dead letter at once.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy.exc import OperationalError

from orderflow.redaction import redact


class ErrorClass(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    POISON = "poison"
    # Transient, but the same request kept failing while its dependency was up (e.g. a 500
    # for this payload only): out of attempts. May heal, so it can be redriven automatically.
    EXHAUSTED = "exhausted"


class StepError(Exception):
    error_class: ErrorClass = ErrorClass.POISON

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class TransientError(StepError):
    error_class = ErrorClass.TRANSIENT

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
        may_have_happened: bool = True,
    ) -> None:
        super().__init__(message, http_status=http_status)
        self.retry_after = retry_after
        # False only when the request surely had no effect (refused, 429, 503): then a retry
        # needs no reconciliation first.
        self.may_have_happened = may_have_happened


class PermanentError(StepError):
    error_class = ErrorClass.PERMANENT


# Answers that mean "the service is down or busy", not "this request is bad": never exhausts.
OUTAGE_STATUSES = frozenset({408, 429, 502, 503, 504})
# Answers after which the request surely had no effect: it was refused, not processed.
NOT_PROCESSED_STATUSES = frozenset({408, 425, 429, 503})


def exhausts(exc: BaseException, attempts: int, max_attempts: int | None) -> bool:
    """A transient failure that says something about this request, after too many attempts."""
    return (
        max_attempts is not None
        and attempts >= max_attempts
        and isinstance(exc, TransientError)
        and exc.http_status is not None
        and exc.http_status not in OUTAGE_STATUSES
    )


def classify(exc: BaseException) -> ErrorClass:
    if isinstance(exc, StepError):
        return exc.error_class
    if isinstance(exc, OperationalError):  # our own database hiccuped (locked, restarting)
        return ErrorClass.TRANSIENT
    return ErrorClass.POISON


def describe(exc: BaseException) -> str:
    """The exception as evidence (attempt records, dead letters, a dependency's last error,
    log events): redacted, as an outside library's message may quote a URL with its secret."""
    text = str(exc) or type(exc).__name__
    return redact(text if isinstance(exc, StepError) else f"{type(exc).__name__}: {text}")
