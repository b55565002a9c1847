"""A stand-in for Slack's incoming-webhook endpoint: keeps what it receives, can be 'down'."""

from __future__ import annotations

import threading
from typing import Any

from fastapi import FastAPI, Request, Response

from orderflow.serving import BackgroundServer


class SlackReceiver:
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.down = False
        self._lock = threading.Lock()
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            if self.down:
                return Response("service unavailable", status_code=503)
            body: dict[str, Any] = await request.json()
            with self._lock:
                self.messages.append(str(body["text"]))
            return Response("ok")

        self.server = BackgroundServer(app)

    @property
    def url(self) -> str:
        return f"{self.server.url}/hook"

    def received(self, containing: str = "") -> list[str]:
        with self._lock:
            return [m for m in self.messages if containing in m]

    def __enter__(self) -> SlackReceiver:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
