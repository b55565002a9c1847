"""Slack incoming webhooks: POST {"text": …}; classified like every other outside call.

Slack reads `<…>` in a message as a control sequence (`<!channel>` pings everyone,
`<https://x|label>` is a link labelled as anything) and `&` as the start of an entity, so
every piece of text we did not write ourselves (an outside service's error, a customer's
payment method or address in a refusal, a queue message's SKU) goes through `escape`: per
Slack's message formatting rules, `&`, `<` and `>` become `&amp;`, `&lt;` and `&gt;`.
"""

from __future__ import annotations

import httpx

from orderflow.http import raise_for_status, transport_errors

API = "Slack"


def escape(text: str) -> str:
    """Text shown as written in a Slack message: no mentions, links or entities of its own."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackClient:
    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self._http = httpx.Client(timeout=timeout)

    def post(self, text: str) -> None:
        with transport_errors(API):
            response = self._http.post(self.url, json={"text": text})
        raise_for_status(response, API)

    def close(self) -> None:
        self._http.close()
