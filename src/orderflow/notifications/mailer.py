"""SMTP delivery, classified like every other outside call."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from urllib.parse import unquote, urlparse

from orderflow.tasks.errors import PermanentError, TransientError


class Mailer:
    """Sends over SMTP to `smtp://[user:pass@]host:port` (or `smtps://`, or `?starttls`)."""

    def __init__(self, smtp_url: str, timeout: float) -> None:
        url = urlparse(smtp_url)
        if url.scheme not in ("smtp", "smtps"):
            raise ValueError(f"ORDERFLOW_SMTP_URL must be smtp:// or smtps://, got {smtp_url!r}")
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (465 if url.scheme == "smtps" else 25)
        self.tls = url.scheme == "smtps"
        self.starttls = "starttls" in url.query
        self.username = unquote(url.username) if url.username else None
        self.password = unquote(url.password) if url.password else None
        self.timeout = timeout

    def send(self, message: EmailMessage) -> None:
        try:
            smtp_class = smtplib.SMTP_SSL if self.tls else smtplib.SMTP
            with smtp_class(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = {code for code, _ in exc.recipients.values()}
            if all(code >= 500 for code in codes):
                raise PermanentError(f"SMTP refused the recipient: {exc.recipients}") from exc
            raise TransientError(f"SMTP deferred the recipient: {exc.recipients}") from exc
        except smtplib.SMTPResponseException as exc:
            text = f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"
            if 500 <= exc.smtp_code < 600:
                raise PermanentError(text) from exc
            raise TransientError(text) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise TransientError(f"SMTP: {type(exc).__name__}: {exc}") from exc
