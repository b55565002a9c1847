"""Which origin the console's forms must come from, and when its cookie is Secure, behind a
proxy that is or is not trusted (a request from a remote proxy, as uvicorn would pass it)."""

from __future__ import annotations

from starlette.requests import Request

from orderflow.config import Settings
from orderflow.web.console.sessions import own_origin, same_origin, secure_request


def _request(**headers: str) -> Request:
    scope = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "server": ("10.0.0.7", 8000),
        "client": ("10.0.0.5", 40000),  # a proxy on another host: uvicorn leaves it alone
        "path": "/console/logout",
        "query_string": b"",
        "headers": [(k.lower().replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }
    return Request(scope)


BEHIND_PROXY = {
    "host": "10.0.0.7:8000",
    "x_forwarded_proto": "https",
    "x_forwarded_host": "shop.example",
    "origin": "https://shop.example",
}


def test_a_trusted_proxy_makes_the_cookie_secure_and_sets_the_origin() -> None:
    """With ORDERFLOW_TRUST_PROXY_HEADERS the proxy's https and host are believed."""
    settings = Settings(_env_file=None, trust_proxy_headers=True)
    request = _request(**BEHIND_PROXY)
    assert secure_request(request, settings)
    assert own_origin(request, settings) == "https://shop.example"
    assert same_origin(request, settings)


def test_an_untrusted_proxy_header_changes_nothing() -> None:
    """Without it, X-Forwarded-* is ignored: plain http, and the proxy's origin is foreign."""
    settings = Settings(_env_file=None)
    request = _request(**BEHIND_PROXY)
    assert not secure_request(request, settings)
    assert own_origin(request, settings) == "http://10.0.0.7:8000"
    assert not same_origin(request, settings)
    assert same_origin(_request(host="10.0.0.7:8000", referer="http://10.0.0.7:8000/x"), settings)
    assert not same_origin(_request(host="10.0.0.7:8000", origin="null"), settings)
