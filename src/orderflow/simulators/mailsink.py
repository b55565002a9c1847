"""A real SMTP server (aiosmtpd) that keeps every message it receives, with a small HTTP view."""

from __future__ import annotations

import dataclasses
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import uvicorn
from aiosmtpd.controller import Controller
from fastapi import FastAPI


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the sink received it."""

    mail_from: str
    rcpt_to: list[str]
    subject: str
    message_id: str | None
    sender_header: str
    to_header: str
    body: str  # the text/plain part
    received_at: datetime  # aware, UTC


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    text = str(part.get_content()) if part is not None else ""
    return text.replace("\r\n", "\n")  # SMTP carries CRLF; keep the text as it was written


def _parse(mail_from: str, rcpt_to: list[str], content: bytes, at: datetime) -> ReceivedMail:
    message = message_from_bytes(content, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return ReceivedMail(
        mail_from=mail_from,
        rcpt_to=rcpt_to,
        subject=str(message.get("Subject", "")),
        message_id=str(message["Message-ID"]).strip() if message["Message-ID"] else None,
        sender_header=str(message.get("From", "")),
        to_header=str(message.get("To", "")),
        body=_text(message),
        received_at=at,
    )


class MailSink:
    """`with MailSink() as sink: smtplib.SMTP("127.0.0.1", sink.smtp_port)…; sink.messages()`."""

    def __init__(self, host: str = "127.0.0.1", smtp_port: int = 0) -> None:
        self.host = host
        self.smtp_port = smtp_port
        self._lock = threading.Lock()
        self._messages: list[ReceivedMail] = []  # parsed, oldest first
        self._raw: list[tuple[str, list[str], bytes, datetime]] = []  # received, not parsed yet
        self._controller: Controller | None = None

    @property
    def smtp_url(self) -> str:
        return f"smtp://{self.host}:{self.smtp_port}"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """aiosmtpd's hook: keep the message as it came, and accept it at once.

        Parsed when read, not here: until the client has the 250 it cannot record the message
        as sent, so the work done before answering widens the instant in which a client that
        dies would send the message again (a real server would answer right after storing it).
        """
        raw = (
            str(envelope.mail_from),
            [str(r) for r in envelope.rcpt_tos],
            bytes(envelope.content),
            datetime.now(UTC),
        )
        with self._lock:
            self._raw.append(raw)
        return "250 Message accepted for delivery"

    def start(self) -> MailSink:
        """Listen (on a free port when `smtp_port` is 0); aiosmtpd runs its own thread."""
        if self.smtp_port == 0:
            self.smtp_port = _free_port(self.host)
        self._controller = Controller(self, hostname=self.host, port=self.smtp_port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def messages(self) -> list[ReceivedMail]:
        """A snapshot of every message received, oldest first."""
        with self._lock:
            self._messages.extend(_parse(*raw) for raw in self._raw)
            self._raw.clear()
            return list(self._messages)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
            self._raw.clear()

    def stats(self) -> dict[str, Any]:
        """`received`, `distinct_message_ids`, and `duplicates` (a Message-ID seen before)."""
        received = self.messages()
        ids = [m.message_id for m in received if m.message_id is not None]
        distinct = len(set(ids))
        return {
            "received": len(received),
            "distinct_message_ids": distinct,
            "duplicates": len(ids) - distinct,
        }


def _as_json(mail: ReceivedMail) -> dict[str, Any]:
    out = dataclasses.asdict(mail)
    out["received_at"] = mail.received_at.isoformat().replace("+00:00", "Z")
    return out


def create_app(sink: MailSink) -> FastAPI:
    """`GET /messages` (newest first, `?to=` filters on recipient) and `GET /stats`."""
    app = FastAPI(title="Mail sink")

    @app.get("/messages")
    async def messages(to: str | None = None) -> list[dict[str, Any]]:
        found = sink.messages()[::-1]
        if to:
            found = [m for m in found if to.lower() in (r.lower() for r in m.rcpt_to)]
        return [_as_json(m) for m in found]

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return sink.stats()

    return app


def run(host: str, smtp_port: int, http_port: int) -> None:
    """Serve SMTP and the HTTP view until interrupted (`orderflow sim mailsink`)."""
    with MailSink(host, smtp_port) as sink:
        uvicorn.run(create_app(sink), host=host, port=http_port)
