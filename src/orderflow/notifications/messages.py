"""The e-mails customers get, rendered from templates; one per order and milestone."""

from __future__ import annotations

from email import charset
from email.message import EmailMessage, Message
from email.mime.text import MIMEText
from email.utils import formatdate
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,  # plain-text mail
)

SUBJECTS = {
    "shipped": "Your order {reference} has shipped",
    "payment_failed": "Payment declined for your order {reference}",
    "cancelled": "Your order {reference} has been cancelled",
}


def message_id(reference: str, milestone: str, mail_from: str) -> str:
    """Stable across retries and crashes, so a receiver can drop a duplicate delivery."""
    domain = mail_from.rpartition("@")[2] or "orderflow.invalid"
    return f"<{reference}.{milestone}@{domain}>"


# Quoted-printable keeps a mostly-ASCII body readable on the wire (base64 would not).
UTF8_QP = charset.Charset("utf-8")
UTF8_QP.body_encoding = charset.QP


def build(
    *, milestone: str, reference: str, recipient: str, mail_from: str, context: dict[str, Any]
) -> Message:
    headers = {
        "From": mail_from,
        "To": recipient,
        "Subject": SUBJECTS[milestone].format(reference=reference),
        "Message-ID": message_id(reference, milestone, mail_from),
        "Date": formatdate(usegmt=True),
        "X-Orderflow-Reference": reference,
    }
    body = _env.get_template(f"{milestone}.txt").render(reference=reference, **context)
    if not all(value.isascii() for value in headers.values()):
        # The modern API encodes what needs encoding, at ten times the cost of the plain one.
        rich = EmailMessage()
        for name, value in headers.items():
            rich[name] = value
        rich.set_content(body)
        return rich
    # ASCII headers (the usual case) need no parsing or encoding: stored as they are.
    message = MIMEText(body, "plain", "us-ascii" if body.isascii() else UTF8_QP)  # type: ignore[arg-type]
    for name, value in headers.items():
        message[name] = value
    return message
