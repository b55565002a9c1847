"""Run an ASGI app with uvicorn: on a real port in a background thread (demo and tests), or
in N processes sharing one port (`orderflow serve --workers N`)."""

from __future__ import annotations

import importlib
import multiprocessing
import signal
import socket
import threading
import time
from typing import Any

import structlog
import uvicorn

log = structlog.get_logger("orderflow.serve")

# Idle keep-alive connections are closed after this long. uvicorn's default (5 s) equals httpx's
# and many clients' pool expiry, so the server could close a connection at the very moment a
# client reused it ("Server disconnected without sending a response"); longer than the clients'
# expiry, the client always lets go first.
KEEP_ALIVE_SECONDS = 30


class BackgroundServer:
    """`with BackgroundServer(app, port=0) as server: server.url` — stops cleanly on exit."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.host = host

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.host} did not start")
            time.sleep(0.01)
        return self

    @property
    def port(self) -> int:
        sockets = self._server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_processes(factory: str, host: str, port: int, workers: int) -> int:
    """Run `factory` ("module:function" returning an ASGI app) in `workers` processes.

    Each process listens on its own SO_REUSEPORT socket, so the kernel spreads connections
    evenly over them (with one shared socket, the first process to wake takes a whole burst
    of keep-alive connections and the others idle). A process that dies is restarted; SIGTERM
    or SIGINT stops them all, each finishing its requests in hand. Returns the exit status.
    """
    if port == 0:
        raise ValueError("--workers needs a fixed --port")
    spawn = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def start() -> Any:
        process = spawn.Process(target=_serve_one, args=(factory, host, port), daemon=False)
        process.start()
        return process

    def stop(signum: int, _frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    processes = [start() for _ in range(workers)]
    started = time.monotonic()
    status = 0
    while not stopping.wait(0.5):
        for i, process in enumerate(processes):
            if process.is_alive():
                continue
            if time.monotonic() - started < 10:  # dying at start: a configuration problem
                log.error("serve.worker_failed_at_start", exitcode=process.exitcode)
                stopping.set()
                status = 1
                break
            log.warning("serve.worker_restarted", exitcode=process.exitcode)
            processes[i] = start()
    for process in processes:
        if process.is_alive() and process.pid is not None:
            process.terminate()  # SIGTERM: uvicorn finishes the requests in hand
    for process in processes:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
            process.join()
    return status


def _serve_one(factory: str, host: str, port: int) -> None:
    module, _, name = factory.partition(":")
    app = getattr(importlib.import_module(module), name)()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        backlog=2048,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    uvicorn.Server(config).run(sockets=[sock])
