"""The redaction point: configured secrets and URL passwords never come out of it."""

from __future__ import annotations

import io
import logging
import secrets

import httpx

from orderflow import redaction
from orderflow.config import Settings
from orderflow.tasks.errors import describe


def _settings() -> tuple[Settings, dict[str, str]]:
    tail = f"slacktoken{secrets.token_hex(6)}"
    values = {
        "admin_token": f"adm{secrets.token_hex(6)}",
        "paydesk_api_key": f"pd{secrets.token_hex(6)}",
        "smtp_password": f"sm{secrets.token_hex(6)}",
        "slack_tail": tail,
    }
    settings = Settings(
        _env_file=None,
        admin_token=values["admin_token"],
        paydesk_api_key=values["paydesk_api_key"],
        smtp_url=f"smtp://alerts:{values['smtp_password']}@mail.example:25",
        slack_webhook_url=f"https://hooks.slack.example/services/T0/B0/{tail}",
    )
    return settings, values


def test_configured_secrets_and_url_passwords_are_blanked() -> None:
    """Building Settings makes their secrets (and any URL's password) redacted everywhere."""
    settings, values = _settings()
    text = (
        f"token {values['admin_token']} key {values['paydesk_api_key']} "
        f"POST /services/T0/B0/{values['slack_tail']} {settings.smtp_url} "
        "amqp://relay:unconfigured-pw@mq:5672/"
    )
    out = redaction.redact(text)
    assert [v for v in values.values() if v in out] == []
    assert "unconfigured-pw" not in out and "amqp://relay:[REDACTED]@mq" in out


def test_a_library_log_record_and_its_traceback_are_redacted() -> None:
    """A stdlib record (an httpx.URL argument, an exception quoting the URL) is redacted."""
    settings, values = _settings()
    redaction.install()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    url = httpx.URL(str(settings.slack_webhook_url))
    try:
        try:
            raise RuntimeError(f"cannot post to {url}")
        except RuntimeError:
            logger.error("HTTP Request: %s %s", "POST", url, exc_info=True)
    finally:
        logger.removeHandler(handler)
    written = stream.getvalue()
    assert "HTTP Request: POST" in written and "RuntimeError" in written
    assert values["slack_tail"] not in written


def test_attempt_errors_are_redacted() -> None:
    """An exception recorded as evidence (describe) names no secret."""
    _, values = _settings()
    error = httpx.ConnectError(f"failed with key {values['paydesk_api_key']}")
    assert values["paydesk_api_key"] not in describe(error)
    assert describe(error).startswith("ConnectError: failed with key [REDACTED]")
