"""The SMTP mail sink: real SMTP in (smtplib), what it kept out, over Python and over HTTP."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from datetime import UTC
from email.message import EmailMessage
from email.utils import make_msgid

import httpx
import pytest

from orderflow.serving import BackgroundServer
from orderflow.simulators.mailsink import MailSink, create_app


@pytest.fixture
def sink() -> Iterator[MailSink]:
    with MailSink() as s:
        yield s


def mail(to: str, subject: str, message_id: str | None = None, html: bool = False) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Orderflow <orders@shop.example>"
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = message_id or make_msgid(domain="shop.example")
    message.set_content(f"Hello,\n{subject}\n")
    if html:
        message.add_alternative(f"<p>{subject}</p>", subtype="html")
    return message


def send(sink: MailSink, *messages: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", sink.smtp_port, timeout=5) as smtp:
        for message in messages:
            smtp.send_message(message)


def test_port_zero_binds_a_real_port(sink: MailSink) -> None:
    """With smtp_port 0 the sink listens on an actual port and says so in smtp_url."""
    assert sink.smtp_port > 0
    assert sink.smtp_url == f"smtp://127.0.0.1:{sink.smtp_port}"


def test_a_message_sent_with_smtplib_is_kept_whole(sink: MailSink) -> None:
    """Envelope, Subject, Message-ID, From/To headers, the text part and a UTC receipt time."""
    message_id = make_msgid(domain="shop.example")
    send(sink, mail("Ada <ada@example.com>", "Your order has shipped", message_id, html=True))
    [got] = sink.messages()
    assert got.mail_from == "orders@shop.example" and got.rcpt_to == ["ada@example.com"]
    assert got.subject == "Your order has shipped" and got.message_id == message_id
    assert got.sender_header == "Orderflow <orders@shop.example>"
    assert got.to_header == "Ada <ada@example.com>"
    assert got.body == "Hello,\nYour order has shipped\n"
    assert got.received_at.tzinfo is not None and got.received_at.utcoffset() == UTC.utcoffset(None)


def test_duplicates_are_counted_by_message_id(sink: MailSink) -> None:
    """The same Message-ID sent twice is one distinct message and one duplicate."""
    same = make_msgid(domain="shop.example")
    send(sink, mail("a@example.com", "one", same), mail("a@example.com", "one", same))
    send(sink, mail("b@example.com", "two"))
    assert sink.stats() == {"received": 3, "distinct_message_ids": 2, "duplicates": 1}
    assert [m.subject for m in sink.messages()] == ["one", "one", "two"]


def test_the_http_view_lists_newest_first_and_filters(sink: MailSink) -> None:
    """GET /messages is newest first and `?to=` keeps one recipient's mail; GET /stats counts."""
    send(sink, mail("a@example.com", "first"), mail("b@example.com", "second"))
    with BackgroundServer(create_app(sink)) as server, httpx.Client(base_url=server.url) as http:
        listed = http.get("/messages").json()
        assert [m["subject"] for m in listed] == ["second", "first"]
        assert listed[0]["received_at"].endswith("Z") and listed[0]["message_id"]
        only_a = http.get("/messages", params={"to": "A@example.com"}).json()
        assert [m["subject"] for m in only_a] == ["first"]
        assert http.get("/stats").json()["received"] == 2


def test_stop_and_clear(sink: MailSink) -> None:
    """clear() empties the box; after stop() the port no longer accepts connections."""
    send(sink, mail("a@example.com", "x"))
    sink.clear()
    assert sink.messages() == [] and sink.stats()["received"] == 0
    sink.stop()
    with pytest.raises(OSError):
        smtplib.SMTP("127.0.0.1", sink.smtp_port, timeout=1)
