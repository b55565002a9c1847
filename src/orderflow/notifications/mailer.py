"""SMTP delivery, classified like every other outside call."""

from __future__ import annotations

import contextlib
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from email.message import Message
from urllib.parse import unquote, urlparse

from orderflow.tasks.errors import PermanentError, TransientError

IDLE_CHECK_SECONDS = 5.0  # a connection idle this long is checked (NOOP) before reuse


class Mailer:
    """Sends over SMTP to `smtp://[user:pass@]host:port` (or `smtps://`, or `?starttls`)."""

    def __init__(self, smtp_url: str, timeout: float) -> None:
        url = urlparse(smtp_url)
        if url.scheme not in ("smtp", "smtps"):
            # Never the URL itself: it may carry the password (Settings check it before this).
            raise ValueError(f"ORDERFLOW_SMTP_URL must be smtp:// or smtps://, not {url.scheme}://")
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (465 if url.scheme == "smtps" else 25)
        self.tls = url.scheme == "smtps"
        self.starttls = "starttls" in url.query
        self.username = unquote(url.username) if url.username else None
        self.password = unquote(url.password) if url.password else None
        self.timeout = timeout
        self._lock = threading.Lock()
        self._smtp: smtplib.SMTP | None = None
        self._used_at = 0.0

    def send(self, message: Message, on_accepted: Callable[[], None] | None = None) -> None:
        """Send one message; `on_accepted` runs as soon as the server has accepted it.

        Messages go one at a time over one kept-open connection, and `on_accepted` (which
        records the message as sent) runs before the next one starts: so at any instant at
        most one message is accepted but not yet recorded, and a crash can repeat only it.
        """
        with self._lock:
            try:
                smtp = self._connection()
                smtp.send_message(message)
            except smtplib.SMTPRecipientsRefused as exc:
                codes = {code for code, _ in exc.recipients.values()}
                if all(code >= 500 for code in codes):
                    raise PermanentError(f"SMTP refused the recipient: {exc.recipients}") from exc
                raise TransientError(f"SMTP deferred the recipient: {exc.recipients}") from exc
            except smtplib.SMTPResponseException as exc:
                self._drop()
                text = f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"
                if 500 <= exc.smtp_code < 600:
                    raise PermanentError(text) from exc
                raise TransientError(text) from exc
            except (smtplib.SMTPException, OSError) as exc:
                self._drop()
                raise TransientError(f"SMTP: {type(exc).__name__}: {exc}") from exc
            self._used_at = time.monotonic()
            if on_accepted is not None:
                on_accepted()

    def _connection(self) -> smtplib.SMTP:
        """The open connection, checked with a NOOP when it sat idle; else a new one."""
        if self._smtp is not None and time.monotonic() - self._used_at > IDLE_CHECK_SECONDS:
            try:
                self._smtp.noop()
            except (smtplib.SMTPException, OSError):
                self._drop()
        if self._smtp is None:
            smtp_class = smtplib.SMTP_SSL if self.tls else smtplib.SMTP
            smtp = smtp_class(self.host, self.port, timeout=self.timeout)
            try:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self.password or "")
            except BaseException:
                smtp.close()
                raise
            self._smtp = smtp
        return self._smtp

    def _drop(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._smtp.quit()
            self._smtp.close()
            self._smtp = None

    def close(self) -> None:
        with self._lock:
            self._drop()
