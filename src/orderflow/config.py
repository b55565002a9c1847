"""One typed Settings object, read from ORDERFLOW_* environment variables (and `.env`).

Built by entry points (CLI commands, test fixtures), never at import time.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from orderflow import redaction
from orderflow.database_url import check_database_url


def _check_url(value: str, schemes: tuple[str, ...], *, whole_secret: bool) -> str:
    """A clear error for a malformed URL setting, never quoting its password (or, for a URL
    that is a secret as a whole, such as a webhook URL, anything of it)."""
    shown = "" if whole_secret else f" (got {redaction.masked_url(value)})"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises on a port that is no number or out of range)
    except ValueError as exc:
        reason = str(exc).replace(value, "…")
        raise ValueError(f"not a valid URL: {reason}{shown}") from None
    if parts.scheme not in schemes:
        expected = " or ".join(f"{s}://" for s in schemes)
        raise ValueError(f"must start with {expected}{shown}")
    if not parts.hostname:
        raise ValueError(f"names no host{shown}")
    return value


class Settings(BaseSettings):
    # `hide_input_in_errors`: a rejected value (a URL with its password, a token) is never
    # quoted in a validation error.
    model_config = SettingsConfigDict(
        env_prefix="ORDERFLOW_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    database_url: str = "sqlite:///./orderflow.db"
    admin_token: str | None = None  # the bootstrap credential (see orderflow.people.four_eyes)

    # The console: a session ends after this long without a request, and this long after
    # login in any case. Its cookie is Secure when `secure_cookies` is set, when the request
    # came over TLS, or (with `trust_proxy_headers`) when the proxy's X-Forwarded-Proto says
    # https; that setting also makes X-Forwarded-Host the origin forms must come from.
    console_session_idle_seconds: float = Field(8 * 3600.0, gt=0)
    console_session_max_seconds: float = Field(24 * 3600.0, gt=0)
    secure_cookies: bool = False
    trust_proxy_headers: bool = False

    bobs_post_url: str | None = None
    bobs_post_api_key: str = ""
    bobs_post_webhook_secret: str = ""
    paydesk_url: str | None = None
    paydesk_api_key: str = ""
    smtp_url: str | None = None
    mail_from: str = "orders@orderflow.example"

    retry_base_seconds: float = Field(2.0, gt=0)
    retry_max_seconds: float = Field(600.0, gt=0)
    tracking_poll_seconds: float = Field(3600.0, gt=0)
    lease_seconds: float = Field(60.0, gt=0)
    http_timeout_seconds: float = Field(10.0, gt=0)
    webhook_tolerance_seconds: float = Field(300.0, gt=0)

    # Dependency health: the breaker opens after this many consecutive failed calls, then lets
    # one probe through this often; pacing is shared by all workers (Bob's Post allows 50/s,
    # and a retried booking may cost two requests, hence the headroom).
    breaker_failure_threshold: int = Field(5, ge=1)
    breaker_probe_seconds: float = Field(30.0, gt=0)
    bobs_post_rate_limit: float = Field(40.0, gt=0)
    paydesk_rate_limit: float = Field(80.0, gt=0)
    # A parcel not collected this long after booking (or not delivered this long after
    # collection) stops being polled and becomes a dead letter for people to look at.
    collection_deadline_seconds: float = Field(3 * 86400.0, gt=0)
    delivery_deadline_seconds: float = Field(30 * 86400.0, gt=0)

    # A request that keeps failing while its dependency is up (never an outage) gives up
    # after this many attempts; such dead letters are redriven automatically once their
    # dependency has been healthy for a while, a few per run, a bounded number of times.
    max_attempts: int = Field(20, ge=1)
    auto_redrive: bool = True
    auto_redrive_seconds: float = Field(30.0, gt=0)
    auto_redrive_per_run: int = Field(20, ge=1)
    auto_redrive_max_times: int = Field(3, ge=0)
    auto_redrive_healthy_seconds: float = Field(60.0, ge=0)

    # Backpressure: age of the oldest due payment (its dependency up) that slows intake down.
    backpressure_warning_seconds: float = Field(10.0, gt=0)
    backpressure_shedding_seconds: float = Field(30.0, gt=0)
    # The API: how long a request waits for a database connection before it is answered 503
    # with Retry-After (never a hang), and how many orders may wait for group commit in one
    # API process before new ones are answered 429 with Retry-After.
    db_pool_timeout_seconds: float = Field(1.0, gt=0)
    placement_queue_limit: int = Field(5000, ge=1)
    # Larger request bodies are refused with 413 (a full batch of 1,000 orders fits easily).
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)

    worker_batch_size: int = Field(32, ge=1, le=1000)
    worker_concurrency: int = Field(16, ge=1, le=256)
    worker_idle_seconds: float = Field(0.5, gt=0)
    # Once a due payment has waited this long, workers take the lanes strictly in order
    # (payments, then bookings and tracking, then e-mail, then the rest) until it has not.
    worker_strict_lanes_seconds: float = Field(0.5, ge=0)

    # Audit: where anchors are exported (outside the database), how often the worker anchors,
    # where retention archives go, and how old an entry must be to leave the hot table.
    audit_anchor_dir: Path | None = None
    audit_anchor_seconds: float = Field(3600.0, gt=0)
    audit_archive_dir: Path | None = None
    audit_archive_after_days: float = Field(365.0, gt=0)
    # Anchors are signed (Ed25519) with this private key, kept outside the database (`orderflow
    # audit keygen` writes a pair); verification needs only the public key, which is derived
    # from the private key when only that is configured. Neither set: anchors are unsigned.
    audit_anchor_key_file: Path | None = None
    audit_anchor_public_key_file: Path | None = None

    attempt_retention_days: float = Field(90.0, gt=0)  # see `orderflow attempts export`

    slack_webhook_url: str | None = None
    logistics_email: str | None = None
    # Alerts: how often conditions are judged, and when a condition becomes an incident.
    alert_check_seconds: float = Field(30.0, gt=0)
    alert_dependency_down_seconds: float = Field(300.0, ge=0)
    alert_backlog_age_seconds: float = Field(900.0, ge=0)
    alert_delivery_delay_seconds: float = Field(4 * 3600.0, ge=0)
    alert_repeat_seconds: float = Field(3600.0, ge=0)
    # How often the backlog per step is sampled for the console's backlog chart.
    backlog_sample_seconds: float = Field(60.0, gt=0)
    # The console's home shows its heaviest counts (orders by status, dead letters by cause,
    # the flow chart) as computed at most this long ago (0: computed for every request).
    console_counts_seconds: float = Field(5.0, ge=0)
    broker_url: str | None = None  # e.g. amqp://guest:guest@127.0.0.1:5672/ (events fan-out)
    outbox_relay_seconds: float = Field(1.0, gt=0)
    outbox_retention_days: float = Field(7.0, gt=0)

    # Queue intake (`orderflow intake`): where orders arrive, how many messages may be in
    # flight (lower it to throttle), and how many orders one transaction commits (group
    # commit), waiting at most this long to fill a group; groups shrink so that one
    # transaction lasts about `intake_transaction_seconds` (it holds its products' stock rows).
    intake_url: str | None = None  # default: broker_url
    intake_queue: str = "orderflow.orders"
    intake_prefetch: int = Field(1000, ge=1, le=65535)
    intake_group_size: int = Field(500, ge=1, le=10000)
    intake_group_seconds: float = Field(0.1, ge=0)
    intake_transaction_seconds: float = Field(0.5, gt=0)

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url_parses(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _check_url(value, ("smtp", "smtps"), whole_secret=False)

    @field_validator("broker_url", "intake_url")
    @classmethod
    def _amqp_url_parses(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _check_url(value, ("amqp", "amqps"), whole_secret=False)

    @field_validator("bobs_post_url", "paydesk_url")
    @classmethod
    def _api_url_parses(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _check_url(value, ("http", "https"), whole_secret=False)

    @field_validator("slack_webhook_url")
    @classmethod
    def _webhook_url_parses(cls, value: str | None) -> str | None:
        if not value:
            return None
        return _check_url(value, ("http", "https"), whole_secret=True)

    def secret_values(self) -> list[str]:
        """Every configured secret: what must never appear in a log, an error or an answer."""
        found: list[str] = [
            v
            for v in (
                self.admin_token,
                self.bobs_post_api_key,
                self.bobs_post_webhook_secret,
                self.paydesk_api_key,
            )
            if v
        ]
        for url in (
            self.database_url,
            self.smtp_url,
            self.broker_url,
            self.intake_url,
            self.bobs_post_url,
            self.paydesk_url,
        ):
            found += redaction.url_secrets(url)
        found += redaction.webhook_url_secrets(self.slack_webhook_url)
        return found

    @model_validator(mode="after")
    def _remember_secrets(self) -> Settings:
        # Whoever builds Settings (an entry point, a test) makes their secrets redacted in
        # every log line, error and piece of evidence this process writes from now on.
        redaction.remember(*self.secret_values())
        return self

    @property
    def intake_broker_url(self) -> str | None:
        """Where `orderflow intake` consumes: ORDERFLOW_INTAKE_URL, else the events broker."""
        return self.intake_url or self.broker_url

    @field_validator("database_url")
    @classmethod
    def _usable_database_url(cls, value: str) -> str:
        return check_database_url(value)

    @model_validator(mode="after")
    def _lease_outlives_a_call(self) -> Settings:
        # A batch's calls run concurrently, so one batch lasts about one HTTP timeout; the lease
        # must outlive it, or a slow batch would be taken over while still running.
        if self.lease_seconds <= 2 * self.http_timeout_seconds:
            raise ValueError(
                "ORDERFLOW_LEASE_SECONDS must be more than twice ORDERFLOW_HTTP_TIMEOUT_SECONDS "
                f"(got {self.lease_seconds} and {self.http_timeout_seconds})"
            )
        if self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError("ORDERFLOW_RETRY_MAX_SECONDS must be >= ORDERFLOW_RETRY_BASE_SECONDS")
        return self
