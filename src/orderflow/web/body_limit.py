"""Request bodies over the size limit are refused with 413, before they are read whole.

This is the outermost middleware of the app (see `create_app`): the limit holds before any
authentication, signature check or parsing, on every route, the webhook endpoint included.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orderflow.errors import DomainError


class BodyTooLarge(DomainError):
    status_code = 413
    code = "body_too_large"


class BodyLimit:
    """ASGI middleware. A declared Content-Length over `max_bytes` is answered 413 at once,
    without reading the body. A body without a Content-Length (chunked) is read here, chunk
    by chunk, before the app sees the request: once it passes `max_bytes` it is answered 413
    and nothing of it is kept; otherwise the app gets it as if it had just arrived."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is None:
            await self._buffered(scope, receive, send)
            return
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _refuse(send, self.max_bytes)
            return
        seen = 0

        async def counted() -> Message:  # the server holds a body to its Content-Length
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge(f"the request body is over {self.max_bytes} bytes")
            return message

        await self.app(scope, counted, send)

    async def _buffered(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                chunks.clear()
                await _refuse(send, self.max_bytes)
                return
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)


async def _refuse(send: Send, max_bytes: int) -> None:
    body = (
        b'{"error": {"code": "body_too_large", "message": "the request body is over '
        + str(max_bytes).encode()
        + b' bytes"}}'
    )
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
