"""Customers' e-mail addresses: checked with email-validator, stored in normalized form.

An address is what the shipped e-mail is sent to (SMTP `RCPT TO`), so anything a mail server
could read differently from us (`a+<b>@example.com`, a display name, a quoted local part, a
NUL) is refused when the customer is created, wherever that happens.
"""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

MAX_LENGTH = 320  # the column's size (RFC 5321 limits a path to 254 anyway)


def normalized_email(address: str) -> str:
    """The address in normalized ASCII form (domain lower-cased, IDNA); ValueError if it is
    not a deliverable-looking address. No DNS look-up: creation never waits on the network.
    ASCII local parts only, so that any SMTP server (without SMTPUTF8) can deliver to it."""
    if len(address) > MAX_LENGTH:
        raise ValueError(f"an e-mail address is at most {MAX_LENGTH} characters")
    try:
        checked = validate_email(address.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid e-mail address: {exc}") from None
    return str(checked.ascii_email or checked.normalized)
