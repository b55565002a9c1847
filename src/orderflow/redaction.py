"""The one place where secrets are blanked out of text that leaves the process.

Every configured secret (tokens, API keys, the webhook secret, the Slack webhook URL, the
passwords in database/SMTP/AMQP URLs) is remembered here when `Settings` are built, and every
way text leaves orderflow passes through `redact`:

- structlog events (a processor, before and after rendering: `logs.configure`);
- standard-library log records, whoever logs them (httpx, uvicorn, aio-pika…): a log record
  factory redacts the message, its arguments and the formatted traceback at creation;
- uncaught exceptions (`sys.excepthook`, `threading.excepthook`) print a redacted traceback;
- exception text recorded as evidence (attempt errors, dead letters, a dependency's last
  error) goes through `orderflow.tasks.errors.describe`, which redacts;
- command-line errors (`orderflow.cli`).

Besides the remembered values, the password of any `scheme://user:password@` URL is blanked,
configured or not. Values shorter than `MIN_LENGTH` are not remembered (blanking every "abc"
would garble all text, and such a value is no secret worth the name).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from collections.abc import Mapping, MutableMapping
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote, urlsplit

MASK = "[REDACTED]"
MIN_LENGTH = 4

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
_installed = False

# `scheme://user:password@host`: the password, whatever it is (configured or not).
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s'\"]*):[^@/\s'\"]+@")


def remember(*values: str | None) -> None:
    """Treat these values (and their URL-encoded forms) as secrets from now on."""
    global _pattern
    added = False
    with _lock:
        for value in values:
            if not value:
                continue
            for form in {value, unquote(value), quote(value, safe="")}:
                if len(form) >= MIN_LENGTH and form not in _secrets:
                    _secrets.add(form)
                    added = True
        if added:
            # Longest first, so that a secret containing another is blanked whole.
            ordered = sorted(_secrets, key=len, reverse=True)
            _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def url_secrets(url: str | None) -> list[str]:
    """The secret parts of a URL: its password (as written and decoded)."""
    if not url:
        return []
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password is None:
        match = re.match(r"^[^:]+://[^:/@]*:([^@]*)@", url)  # urlsplit gave up: find it by hand
        password = match.group(1) if match else None
    return [password, unquote(password)] if password else []


def webhook_url_secrets(url: str | None) -> list[str]:
    """A webhook URL is a secret as a whole; so are its path (Slack's token is its last
    segments) and its query, which appear on their own in request lines and errors."""
    if not url:
        return []
    found = [url, *url_secrets(url)]
    try:
        parts = urlsplit(url)
    except ValueError:
        return found
    if len(parts.path.strip("/")) >= MIN_LENGTH:
        found.append(parts.path)
        last = parts.path.rstrip("/").rsplit("/", 1)[-1]
        if len(last) >= 8:
            found.append(last)
    if parts.query:
        found.append(parts.query)
    return found


def redact(text: str) -> str:
    """`text` with every remembered secret and every URL password replaced by `MASK`."""
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
    pattern = _pattern
    return pattern.sub(MASK, text) if pattern is not None else text


def masked_url(url: str) -> str:
    """A URL fit for an error message: whatever comes before its host's `@` (user and
    password) blanked, even when the URL is too malformed to parse; other secrets too."""
    text = redact(url)
    if "@" in text:
        head, _, host = text.rpartition("@")
        scheme = head.split("://", 1)[0] + "://" if "://" in head else ""
        text = f"{scheme}{MASK}@{host}"
    return text


def redact_value(value: Any) -> Any:
    """Strings redacted, inside dicts, lists and tuples too; other values left as they are."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


# --- structlog -----------------------------------------------------------------------------


def structlog_processor(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> Mapping[str, Any]:
    """A structlog processor (after `format_exc_info`): every string value redacted."""
    return {key: redact_value(value) for key, value in event_dict.items()}


def redacting_renderer(renderer: Any) -> Any:
    """Wrap the final renderer: whatever it made of non-string values is redacted too."""

    def render(logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> Any:
        rendered = renderer(logger, name, event_dict)
        return redact(rendered) if isinstance(rendered, str) else rendered

    return render


# --- the standard library's logging, and uncaught exceptions -----------------------------------


def _safe_arg(value: Any) -> Any:
    if isinstance(value, int | float) or value is None:
        return value  # `%d` and `%f` still get numbers
    return redact(value if isinstance(value, str) else str(value))


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact a log record in place: message, arguments, traceback (formatted once, here)."""
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    elif record.msg is not None:
        record.msg = redact(str(record.msg))
    if isinstance(record.args, Mapping):
        record.args = {k: _safe_arg(v) for k, v in record.args.items()}
    elif isinstance(record.args, tuple):
        record.args = tuple(_safe_arg(a) for a in record.args)
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        text = "".join(traceback.format_exception(*record.exc_info))
        record.exc_text = redact(text.rstrip("\n"))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


def _excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))
    sys.stderr.flush()


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    sys.stderr.write(f"Exception in thread {name}:\n{redact(text)}")
    sys.stderr.flush()


def install() -> None:
    """Redact every standard-library log record and every uncaught exception's traceback
    in this process (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(previous(*args, **kwargs))

    logging.setLogRecordFactory(factory)
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook
