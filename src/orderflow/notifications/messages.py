"""The e-mails customers get, rendered from templates; one per order and milestone."""

from __future__ import annotations

from email.message import EmailMessage
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


def build(
    *, milestone: str, reference: str, recipient: str, mail_from: str, context: dict[str, Any]
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = recipient
    message["Subject"] = SUBJECTS[milestone].format(reference=reference)
    message["Message-ID"] = message_id(reference, milestone, mail_from)
    message["Date"] = formatdate(usegmt=True)
    message["X-Orderflow-Reference"] = reference
    body = _env.get_template(f"{milestone}.txt").render(reference=reference, **context)
    message.set_content(body)
    return message
