"""Structured logs: one JSON event per line in production, readable lines in the demo.

Nothing secret is ever written: every event, every standard-library record and every uncaught
traceback passes through `orderflow.redaction` (fed with the configured secrets by Settings).
"""

from __future__ import annotations

import logging
import sys

import structlog

from orderflow import redaction

# Libraries whose INFO lines name URLs (httpx logs every request line, and a webhook URL is a
# secret as a whole): kept to warnings, which are redacted like everything else.
QUIET_LOGGERS = ("httpx", "httpcore")


def configure(*, json: bool = True, level: str = "INFO") -> None:
    redaction.install()
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json
        # Plain tracebacks: with `rich` installed (a test tool pulls it in) structlog would
        # otherwise render each one highlighted, with locals, taking seconds under load.
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redaction.structlog_processor,
            redaction.redacting_renderer(renderer),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
