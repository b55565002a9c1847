"""The one source of 'now': timezone-aware UTC."""

from datetime import UTC, datetime, timedelta


def now() -> datetime:
    return datetime.now(UTC)


def after(seconds: float) -> datetime:
    return now() + timedelta(seconds=seconds)
