"""A stand-in for Slack's incoming-webhook endpoint: keeps what it receives, can be 'down'."""

from __future__ import annotations

import threading
from typing import Any

from fastapi import FastAPI, Request, Response

from orderflow.serving import BackgroundServer


class SlackReceiver:
    """`down`: answers 503; `failing_status` (e.g. 500): answers that to every post, which it
    counts in `refused`. `path`: where it listens (Slack's carry a secret token)."""

    def __init__(self, path: str = "/hook") -> None:
        self.messages: list[str] = []
        self.down = False
        self.failing_status: int | None = None
        self.refused = 0
        self.path = path
        self._lock = threading.Lock()
        app = FastAPI()

        @app.post(path)
        async def hook(request: Request) -> Response:
            if self.down:
                return Response("service unavailable", status_code=503)
            if self.failing_status is not None:
                with self._lock:
                    self.refused += 1
                return Response("internal error", status_code=self.failing_status)
            body: dict[str, Any] = await request.json()
            with self._lock:
                self.messages.append(str(body["text"]))
            return Response("ok")

        self.server = BackgroundServer(app)

    @property
    def url(self) -> str:
        return f"{self.server.url}{self.path}"

    def received(self, containing: str = "") -> list[str]:
        with self._lock:
            return [m for m in self.messages if containing in m]

    def __enter__(self) -> SlackReceiver:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
