"""Webhook signatures: what Bob's Post signs verifies; anything else is refused."""

from __future__ import annotations

import pytest

from orderflow.shipping.signature import BadSignature, sign, verify

BODY = b'{"event_id":"bp_evt_1","status":"collected"}'


def test_a_fresh_correct_signature_verifies() -> None:
    """The header Bob's Post would send is accepted within the tolerance."""
    verify("s3cret", BODY, sign("s3cret", BODY, 1_000), now=1_100, tolerance=300)


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (None, "missing"),
        ("", "missing"),
        ("v1=abc", "malformed"),
        ("t=notanumber,v1=abc", "malformed"),
        (sign("other", BODY, 1_000), "does not match"),
        (sign("s3cret", BODY + b" ", 1_000), "does not match"),
        (sign("s3cret", BODY, 600), "from our clock"),
        (sign("s3cret", BODY, 1_400), "from our clock"),
    ],
)
def test_bad_signatures_are_refused_with_a_reason(header: str | None, match: str) -> None:
    """Missing, malformed, forged, tampered, replayed or future-dated: all refused."""
    with pytest.raises(BadSignature, match=match):
        verify("s3cret", BODY, header, now=1_000 + 99, tolerance=300)


@pytest.mark.parametrize(
    "header",
    [
        f"t={'9' * 401},v1={'0' * 64}",  # int → float overflow in the clock check
        f"t=1000,v1=é{'0' * 63}",  # compare_digest refuses non-ASCII text
        "t=1000,v1=" + "0" * 65,
        "t=-1000,v1=" + "0" * 64,
        "t=１０００,v1=" + "0" * 64,  # noqa: RUF001 (fullwidth digits are digits to int())
    ],
)
def test_malformed_timestamps_and_digests_are_refused_not_crashed(header: str) -> None:
    """A header no Bob's Post would send is a BadSignature, never another exception."""
    with pytest.raises(BadSignature, match="malformed"):
        verify("s3cret", BODY, header, now=1_000, tolerance=300)
