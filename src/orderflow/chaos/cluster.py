"""Real orderflow processes: start, wait until ready, kill -9, restart, read logs, stop.

Every process is `python -m orderflow …` with the current interpreter, its own environment
(`ORDERFLOW_*` set here, nothing inherited), its working directory in the group's directory (so
no stray `.env` is read) and its stdout and stderr appended to `<dir>/logs/<log name>.log`.
`ProcessGroup.stop_all` ends everything (SIGTERM, then SIGKILL); `ProcessGroup.tails` gives the
end of every log for a failure report. `Cluster` is a whole orderflow made of such processes:
the Bob's Post and Paydesk simulators, the mail sink, `serve` and any number of workers, all on
one database, with the API, the simulators' switches and counters, and the database at hand.

Used by `orderflow chaos` and by the end-to-end tests; nothing here depends on pytest. A failed
expectation (a process died, a wait timed out, an unexpected answer) raises `ClusterError`.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, text

FAST_KNOBS = {
    "ORDERFLOW_RETRY_BASE_SECONDS": "0.1",
    "ORDERFLOW_RETRY_MAX_SECONDS": "1",
    "ORDERFLOW_TRACKING_POLL_SECONDS": "2",
    "ORDERFLOW_LEASE_SECONDS": "5",
    "ORDERFLOW_HTTP_TIMEOUT_SECONDS": "2",
    "ORDERFLOW_WORKER_IDLE_SECONDS": "0.05",
}
ADMIN_TOKEN = "e2e-admin-token"
MAIL_FROM = "orders@shop.example"
STOP_GRACE_SECONDS = 5.0
_RELATION = re.compile(r'in relation \\?"(\w+)')
_EVENT = re.compile(r'"event": "([\w.]+)"')
_WORKER_FRAME = re.compile(r'tasks/worker\.py\\?", line \d+, in (\w+)')


class ClusterError(AssertionError):
    """A process or a dependency did not do what was expected (an AssertionError, so that a
    test using the cluster reports it as a failed check)."""


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports nobody listens on right now (the OS picks them by binding
    port 0; all are held until the last is found, then given back)."""
    probes = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def clean_environ(extra: dict[str, str]) -> dict[str, str]:
    """os.environ without any inherited ORDERFLOW_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def wait_until(
    condition: Callable[[], bool], *, timeout: float, every: float = 0.1, what: str = "condition"
) -> float:
    """Poll `condition` until true; returns the seconds it took, or fails after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise ClusterError(f"{what}: not reached within {timeout}s")
        time.sleep(every)
    return time.monotonic() - start


@dataclass
class Proc:
    """One running `orderflow` subprocess and its log file (which earlier incarnations of the
    same log name may share: `log()` and `tail()` read only this one's part)."""

    name: str
    args: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict, repr=False)
    log_offset: int = 0
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        """What this process wrote (its stdout and stderr) so far."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self.log_offset)
                return handle.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        content = self.log().splitlines()
        return "\n".join(content[-lines:]) if content else "(no log)"

    def kill9(self) -> None:
        """SIGKILL now and reap it: no handler runs, nothing is released."""
        os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def terminate(self, grace: float = STOP_GRACE_SECONDS) -> int:
        """SIGTERM, then SIGKILL if it has not exited after `grace` seconds; the exit code."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        return int(self.popen.returncode)

    def describe(self) -> str:
        state = "running" if self.alive() else f"exited {self.popen.returncode}"
        return f"{self.name} (pid {self.pid}, {state})"


class ProcessGroup:
    """Every process started for one run or test; `stop_all` ends them whatever happened."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.logs = directory / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []
        self._lock = threading.Lock()

    def start(
        self, name: str, args: Sequence[str], env: dict[str, str], *, log_name: str | None = None
    ) -> Proc:
        """`python -m orderflow <args>` with `env`; stdout and stderr appended to
        `logs/<log_name or name>.log`."""
        log_path = self.logs / f"{log_name or name}.log"
        argv = [sys.executable, "-m", "orderflow", *args]
        with log_path.open("ab") as log:
            offset = log.tell()
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            popen = subprocess.Popen(
                argv,
                env=env,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = Proc(name, list(args), popen, log_path, dict(env), offset)
        with self._lock:
            self.procs.append(proc)
        return proc

    def restart(
        self, proc: Proc, *, name: str | None = None, args: Sequence[str] | None = None
    ) -> Proc:
        """A new process like `proc` (same environment and log file), `proc` ended first."""
        if proc.alive():
            proc.terminate()
        return self.start(
            name or proc.name,
            proc.args if args is None else args,
            proc.env,
            log_name=proc.log_path.stem,
        )

    def run(self, name: str, args: Sequence[str], env: dict[str, str], timeout: float = 60) -> str:
        """Run a command to its end (e.g. `migrate`); fails with its output if it fails."""
        argv = [sys.executable, "-m", "orderflow", *args]
        done = subprocess.run(
            argv, env=env, cwd=self.directory, capture_output=True, text=True, timeout=timeout
        )
        output = done.stdout + done.stderr
        (self.logs / f"{name}.log").write_text(f"$ {' '.join(argv)}\n{output}")
        if done.returncode != 0:
            raise ClusterError(f"`orderflow {' '.join(args)}` failed:\n{output}")
        return output

    def snapshot(self) -> list[Proc]:
        """The processes started so far (a copy: safe while another thread starts more)."""
        with self._lock:
            return list(self.procs)

    def stop_all(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM everything at once, then SIGKILL what has not exited after `grace` seconds."""
        procs = self.snapshot()
        for proc in procs:
            if proc.alive():
                proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(timeout=10)

    def deadlocks(self) -> Counter[str]:
        """PostgreSQL deadlocks the processes logged, by relation and the event that logged it."""
        found: Counter[str] = Counter()
        for proc in self.snapshot():
            for line in proc.log().splitlines():
                if not line.startswith("{") or "DeadlockDetected" not in line:
                    continue  # one structured log event per deadlock, not traceback lines
                relation = _RELATION.search(line)
                event = _EVENT.search(line)
                frames = _WORKER_FRAME.findall(line)
                where = f" in Worker.{frames[-1]}" if frames else ""
                found[
                    f"{proc.name}: {relation.group(1) if relation else '?'} rows"
                    f" ({event.group(1) if event else 'unlogged event'}{where})"
                ] += 1
        return found

    def tails(self, lines: int = 40, *, latest: bool = False) -> str:
        """The end of every process's log; `latest`: only the last incarnation per log file."""
        procs = self.snapshot()
        if latest:
            procs = list({proc.log_path: proc for proc in procs}.values())
        out = []
        for proc in procs:
            out.append(f"===== {proc.describe()}: last {lines} lines of {proc.log_path} =====")
            out.append(proc.tail(lines))
        return "\n".join(out)


def wait_http_ready(proc: Proc, url: str, timeout: float = 30.0) -> None:
    """Until `GET url` answers 200; fails at once (with the log) if the process died."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while True:
            if not proc.alive():
                raise ClusterError(f"{proc.describe()} died before ready:\n{proc.tail()}")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"{proc.describe()} not ready at {url}:\n{proc.tail()}")
            time.sleep(0.1)


def wait_log_line(proc: Proc, needle: str, timeout: float = 30.0) -> None:
    """Until `needle` appears in the process's log (e.g. a worker's `worker.started`)."""
    deadline = time.monotonic() + timeout
    while needle not in proc.log():
        if not proc.alive():
            raise ClusterError(f"{proc.describe()} died before {needle!r}:\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise ClusterError(f"{proc.describe()}: no {needle!r} in its log:\n{proc.tail()}")
        time.sleep(0.1)


def _expect(response: httpx.Response, status: int) -> httpx.Response:
    if response.status_code != status:
        raise ClusterError(
            f"{response.request.method} {response.request.url}: expected {status}, "
            f"got {response.status_code}: {response.text[:500]}"
        )
    return response


@dataclass
class Cluster:
    """Simulators, mail sink, `serve` and workers as separate processes on one database."""

    group: ProcessGroup
    database_url: str
    serve_port: int
    carrier_port: int
    paydesk_port: int
    smtp_port: int
    mail_http_port: int
    knobs: dict[str, str] = field(default_factory=lambda: dict(FAST_KNOBS))
    carrier_key: str = field(default_factory=lambda: secrets.token_hex(8))
    paydesk_key: str = field(default_factory=lambda: secrets.token_hex(8))
    webhook_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    workers: dict[str, Proc] = field(default_factory=dict)
    _http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))
    _engine: Engine | None = None

    # --- where things are ------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.serve_port}"

    @property
    def carrier_url(self) -> str:
        return f"http://127.0.0.1:{self.carrier_port}"

    @property
    def paydesk_url(self) -> str:
        return f"http://127.0.0.1:{self.paydesk_port}"

    @property
    def mail_url(self) -> str:
        return f"http://127.0.0.1:{self.mail_http_port}"

    def env(self) -> dict[str, str]:
        """What `serve`, `worker` and `migrate` are given."""
        return clean_environ(
            {
                "ORDERFLOW_DATABASE_URL": self.database_url,
                "ORDERFLOW_ADMIN_TOKEN": ADMIN_TOKEN,
                "ORDERFLOW_BOBS_POST_URL": self.carrier_url,
                "ORDERFLOW_BOBS_POST_API_KEY": self.carrier_key,
                "ORDERFLOW_BOBS_POST_WEBHOOK_SECRET": self.webhook_secret,
                "ORDERFLOW_PAYDESK_URL": self.paydesk_url,
                "ORDERFLOW_PAYDESK_API_KEY": self.paydesk_key,
                "ORDERFLOW_SMTP_URL": f"smtp://127.0.0.1:{self.smtp_port}",
                "ORDERFLOW_MAIL_FROM": MAIL_FROM,
                **self.knobs,
            }
        )

    # --- starting and stopping ---------------------------------------------------------------
    def migrate(self) -> None:
        self.group.run("migrate", ["migrate"], self.env())

    def start_outside_and_serve(self, progress_seconds: float = 0.2, seed: int = 7) -> None:
        """Mail sink, Bob's Post, Paydesk and `serve`, started together, then awaited."""
        sim_env = clean_environ({})
        mail_args = ["--smtp-port", str(self.smtp_port), "--http-port", str(self.mail_http_port)]
        mail = self.group.start("mailsink", ["sim", "mailsink", *mail_args], sim_env)
        carrier_args = [
            *("--port", str(self.carrier_port), "--api-key", self.carrier_key),
            *("--webhook-secret", self.webhook_secret),
            *("--webhook-url", f"{self.api_url}/webhooks/bobs-post"),
            *("--progress-seconds", str(progress_seconds), "--seed", str(seed)),
        ]
        carrier = self.group.start("bobs-post", ["sim", "bobs-post", *carrier_args], sim_env)
        paydesk_args = ["--port", str(self.paydesk_port), "--api-key", self.paydesk_key]
        paydesk = self.group.start(
            "paydesk", ["sim", "paydesk", *paydesk_args, "--seed", str(seed)], sim_env
        )
        serve = self.group.start("serve", ["serve", "--port", str(self.serve_port)], self.env())
        wait_http_ready(mail, f"{self.mail_url}/stats")
        wait_http_ready(carrier, f"{self.carrier_url}/_sim/stats")
        wait_http_ready(paydesk, f"{self.paydesk_url}/_sim/stats")
        wait_http_ready(serve, f"{self.api_url}/healthz")
        wait_http_ready(serve, f"{self.api_url}/readyz")

    def start_worker(self, name: str, *, wait: bool = True, log_name: str | None = None) -> Proc:
        """`orderflow worker --name <name>`; by default waits for its `worker.started` line.
        `log_name` lets successive incarnations of one worker share a log file."""
        proc = self.group.start(
            f"worker-{name}",
            ["worker", "--name", name],
            self.env(),
            log_name=f"worker-{log_name}" if log_name else None,
        )
        self.workers[name] = proc
        if wait:
            wait_log_line(proc, "worker.started")
        return proc

    def close(self) -> None:
        self._http.close()
        if self._engine is not None:
            self._engine.dispose()

    # --- the API -----------------------------------------------------------------------------
    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", **kwargs.pop("headers", {})}
        return self._http.request(method, f"{self.api_url}/api/v1{path}", headers=headers, **kwargs)

    def create_customer(self, index: int) -> int:
        """A customer with a card that always works (`pm_ok_…`) and a deliverable GB address."""
        body = {
            "name": f"Customer {index}",
            "email": f"customer{index}@example.com",
            "phone": "+44 20 7946 0000",
            "address": {
                "line1": f"{index} Acacia Avenue",
                "city": "London",
                "postcode": "SW1Y 4JH",
                "country": "GB",
            },
            "payment_method": f"pm_ok_{index}",
        }
        return int(_expect(self.api("POST", "/customers", json=body), 201).json()["id"])

    def create_product(self, sku: str, stock: int, price: int = 1299) -> None:
        body = {
            "sku": sku,
            "name": sku.title(),
            "price": price,
            "currency": "GBP",
            "weight_grams": 300,
            "stock": stock,
        }
        _expect(self.api("POST", "/products", json=body), 201)

    def stock(self, sku: str) -> int:
        return int(_expect(self.api("GET", f"/products/{sku}"), 200).json()["stock"])

    def place_request(
        self, customer_id: int, lines: list[tuple[str, int]], key: str
    ) -> httpx.Response:
        """`POST /orders` with an Idempotency-Key, the answer as it came."""
        body = {"customer_id": customer_id, "lines": [{"sku": s, "quantity": q} for s, q in lines]}
        return self.api("POST", "/orders", json=body, headers={"Idempotency-Key": key})

    def place(self, customer_id: int, lines: list[tuple[str, int]], key: str) -> dict[str, Any]:
        """Place an order; anything but 202 fails."""
        return dict(_expect(self.place_request(customer_id, lines, key), 202).json())

    def order(self, order_id: int) -> dict[str, Any]:
        """`GET /orders/{id}`: the order with its payment, shipment, work and history."""
        return dict(_expect(self.api("GET", f"/orders/{order_id}"), 200).json())

    def listing(self) -> list[dict[str, Any]]:
        """Every order as `GET /orders` lists it (all pages)."""
        out: list[dict[str, Any]] = []
        before: int | None = None
        while True:
            params: dict[str, Any] = {"limit": 500}
            if before is not None:
                params["before"] = before
            page = _expect(self.api("GET", "/orders", params=params), 200).json()
            out += page["data"]
            before = page["next_before"]
            if before is None:
                return out

    def statuses(self) -> dict[str, str]:
        """Every order's status by reference (all pages)."""
        return {o["reference"]: o["status"] for o in self.listing()}

    def dependencies(self) -> list[dict[str, Any]]:
        """`GET /dependencies`: each dependency's breaker, pace and backlog."""
        return list(_expect(self.api("GET", "/dependencies"), 200).json()["data"])

    def dead_letters(self) -> dict[str, Any]:
        """`GET /dead-letters`: their total, groups by cause and the first hundred."""
        return dict(_expect(self.api("GET", "/dead-letters"), 200).json())

    # --- the outside world -------------------------------------------------------------------
    def paydesk_stats(self) -> dict[str, Any]:
        return dict(_expect(self._http.get(f"{self.paydesk_url}/_sim/stats"), 200).json())

    def carrier_stats(self) -> dict[str, Any]:
        return dict(_expect(self._http.get(f"{self.carrier_url}/_sim/stats"), 200).json())

    def carrier_requests(self, since: float = 0.0) -> list[list[Any]]:
        """Bob's Post's request log from unix time `since`: [unix time, kind, status] each
        (`kind` like `POST /v1/shipments`, or `booked` for each new shipment)."""
        url = f"{self.carrier_url}/_sim/requests"
        return list(_expect(self._http.get(url, params={"since": since}), 200).json()["requests"])

    def paydesk_switches(self, **switches: Any) -> None:
        url = f"{self.paydesk_url}/_sim/switches"
        _expect(self._http.patch(url, json=switches), 200)

    def carrier_switches(self, **switches: Any) -> None:
        url = f"{self.carrier_url}/_sim/switches"
        _expect(self._http.patch(url, json=switches), 200)

    def mails(self) -> list[dict[str, Any]]:
        return list(_expect(self._http.get(f"{self.mail_url}/messages"), 200).json())

    def mail_stats(self) -> dict[str, Any]:
        return dict(_expect(self._http.get(f"{self.mail_url}/stats"), 200).json())

    # --- the database, read directly -----------------------------------------------------------
    def sql(self, statement: str, **params: Any) -> list[Any]:
        if self._engine is None:
            self._engine = create_engine(self.database_url)
        with self._engine.connect() as connection:
            return list(connection.execute(text(statement), params).all())

    def running_leases(self, worker: str) -> int:
        """Tasks `running` under a lease of `worker` (lease owners are `<name>/<batch>`)."""
        rows = self.sql(
            "SELECT count(*) FROM tasks WHERE status = 'running' AND lease_owner LIKE :owner",
            owner=f"{worker}/%",
        )
        return int(rows[0][0])


@contextmanager
def cluster(
    group: ProcessGroup, database_url: str, knobs: dict[str, str] | None = None
) -> Iterator[Cluster]:
    """Allocate ports, migrate the database with the CLI; processes are started by the caller."""
    serve, carrier, paydesk, smtp, mail_http = free_ports(5)
    made = Cluster(
        group=group,
        database_url=database_url,
        serve_port=serve,
        carrier_port=carrier,
        paydesk_port=paydesk,
        smtp_port=smtp,
        mail_http_port=mail_http,
        knobs=dict(FAST_KNOBS if knobs is None else knobs),
    )
    try:
        made.migrate()
        yield made
    finally:
        made.close()
