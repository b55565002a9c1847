"""Slack incoming webhooks: POST {"text": …}; classified like every other outside call."""

from __future__ import annotations

import httpx

from orderflow.http import raise_for_status, transport_errors

API = "Slack"


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
