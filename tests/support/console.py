"""The console over plain HTTP: log in as a user, then post its forms as a browser would."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

from tests.support.stack import PASSWORD, Stack

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Console:
    http: httpx.Client  # carries the session cookie
    origin: str

    def page(self, path: str) -> httpx.Response:
        return self.http.get(path)

    def csrf(self, path: str = "/console/orders") -> str:
        found = CSRF.search(self.page(path).text)
        assert found, "no CSRF token on the page"
        return found.group(1)

    def post(
        self, path: str, data: dict[str, str], *, origin: str | None = "", csrf: bool = True
    ) -> httpx.Response:
        """A form post from the console's own page (or from `origin`, None: no Origin)."""
        form = {**data, "csrf_token": self.csrf()} if csrf else data
        headers = {} if origin is None else {"Origin": origin or self.origin}
        return self.http.post(path, data=form, headers=headers)

    @property
    def cookie(self) -> str:
        value = self.http.cookies.get("orderflow_console")
        assert value
        return value


def log_in(stack: Stack, name: str, password: str = PASSWORD) -> Console:
    http = httpx.Client(base_url=stack.server.url, timeout=10, follow_redirects=False)
    stack.clients.append(http)
    answer = http.post(
        "/console/login",
        data={"name": name, "password": password},
        headers={"Origin": stack.server.url},
    )
    assert answer.status_code == 303, answer.text
    return Console(http, stack.server.url)
