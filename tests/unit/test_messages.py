"""The customer e-mails as they go on the wire."""

from __future__ import annotations

from email import message_from_bytes, policy

from orderflow.notifications import messages

CONTEXT = {
    "name": "Ada Lovelace",
    "tracking_number": "BP123",
    "lines": [{"name": "Mug", "quantity": 1}],
    "address": {
        "line1": "1 High St",
        "line2": None,
        "city": "York",
        "postcode": "Y1",
        "country": "GB",
    },
}


def _wire(name: str, recipient: str = "ada@example.com") -> tuple[str, object]:
    sent = messages.build(
        milestone="shipped",
        reference="ORD-000042",
        recipient=recipient,
        mail_from="orders@shop.example",
        context={**CONTEXT, "name": name},
    )
    raw = sent.as_bytes()
    return raw.decode("ascii"), message_from_bytes(raw, policy=policy.default)


def test_an_ascii_mail_is_plain_text_with_its_stable_message_id() -> None:
    """ASCII in, 7bit out: the body readable on the wire, the Message-ID fixed per milestone."""
    raw, parsed = _wire("Ada Lovelace")
    assert "Content-Transfer-Encoding: 7bit" in raw
    assert parsed["Message-ID"] == "<ORD-000042.shipped@shop.example>"  # type: ignore[index]
    assert "Hello Ada Lovelace," in parsed.get_content()  # type: ignore[attr-defined]


def test_a_name_beyond_ascii_arrives_intact() -> None:
    """A non-ASCII body is UTF-8, quoted-printable (7-bit clean), and decodes to the same text."""
    raw, parsed = _wire("Zoë Ångström")
    assert "quoted-printable" in raw and "charset" in raw
    assert "Hello Zoë Ångström," in parsed.get_content()  # type: ignore[attr-defined]


def test_a_header_beyond_ascii_is_encoded_not_sent_raw() -> None:
    """An internationalised address takes the encoding path; the wire stays 7-bit."""
    raw, parsed = _wire("Ada", recipient="ada@exämple.com")
    assert "exämple" not in raw
    assert "ada@" in str(parsed["To"])  # type: ignore[index]
