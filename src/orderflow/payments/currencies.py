"""The currencies Paydesk charges in: a product priced in any other could never be paid for."""

from __future__ import annotations

# Paydesk answers 422 "bad currency" for any other (payment-gateway-api.md); the simulator
# (simulators/paydesk.py) models the same list, and a unit test keeps the two equal.
PAYDESK_CURRENCIES = frozenset(
    ["AUD", "CAD", "CHF", "CZK", "DKK", "EUR", "GBP", "JPY", "NOK", "NZD", "PLN", "SEK", "USD"]
)


def supported_currency(code: str) -> str:
    """`code` if Paydesk supports it; ValueError naming the supported ones otherwise."""
    if code not in PAYDESK_CURRENCIES:
        raise ValueError(
            f"currency {code[:8]!r} is not supported by the payment gateway "
            f"(one of {', '.join(sorted(PAYDESK_CURRENCIES))})"
        )
    return code
