"""Products are priced only in currencies the payment gateway charges in."""

from __future__ import annotations

import pytest

from orderflow.payments.currencies import PAYDESK_CURRENCIES, supported_currency
from orderflow.simulators import paydesk


def test_our_list_is_the_gateways_list() -> None:
    """The currencies we accept are exactly those the Paydesk simulator charges in."""
    assert PAYDESK_CURRENCIES == paydesk.CURRENCIES


@pytest.mark.parametrize("code", ["XYZ", "gbp", "", "GBPX"])
def test_other_codes_are_refused_naming_the_supported_ones(code: str) -> None:
    """Anything else is a ValueError that lists what is supported."""
    with pytest.raises(ValueError, match="GBP"):
        supported_currency(code)
