"""`orderflow serve --workers N` and `orderflow bench intake` against it, as real processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

import httpx

from orderflow.chaos.cluster import clean_environ, free_ports
from tests.support.intake import BROKER, fresh_queue


def wait_ready(url: str, serve: subprocess.Popen[bytes]) -> None:
    """Until `serve` answers /healthz (failing with its output if it exits first)."""
    deadline = time.monotonic() + 60
    while True:
        assert serve.poll() is None, serve.stdout.read() if serve.stdout else ""
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "serve never became ready"
        time.sleep(0.2)


def bench_intake(env: dict[str, str], *args: str, url: str) -> dict[str, Any]:
    """`orderflow bench intake --json ARGS --url URL` as a process; its report."""
    command = [sys.executable, "-m", "orderflow", "bench", "intake", "--json", *args]
    bench = subprocess.run(
        [*command, "--url", url], env=env, capture_output=True, text=True, timeout=180
    )
    assert bench.returncode == 0, bench.stderr
    report: dict[str, Any] = json.loads(bench.stdout.strip().splitlines()[-1])
    return report


def test_serve_with_two_workers_shares_the_port_and_bench_intake_measures_it(
    database_url: str,
) -> None:
    """Both processes answer on one port; bench places every order; SIGTERM stops all cleanly."""
    [port] = free_ports(1)
    env = clean_environ(
        {
            "ORDERFLOW_DATABASE_URL": database_url,
            "ORDERFLOW_ADMIN_TOKEN": "bench-token",
            "ORDERFLOW_BOBS_POST_WEBHOOK_SECRET": "a-webhook-secret-of-enough-length",
        }
    )
    serve = subprocess.Popen(
        [sys.executable, "-m", "orderflow", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, serve)
        children = subprocess.run(
            ["pgrep", "-P", str(serve.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) >= 2  # the workers (plus, maybe, multiprocessing's tracker)
        report = bench_intake(env, "--via", "post", "--orders", "120", "--clients", "8", url=url)
        assert report["accepted"] == 120 and report["errors"] == {}
        assert report["p99_ms"] >= report["p50_ms"] > 0
        batch = bench_intake(env, "--via", "batch", "--orders", "250", "--clients", "2", url=url)
        assert batch["accepted"] == 250
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=40) == 0


def test_bench_intake_via_the_queue_counts_what_orderflow_intake_placed(
    database_url: str,
) -> None:
    """`bench intake --via queue` publishes to the intake's queue and reports every order
    placed by a running `orderflow intake` (seen through the API), with confirm latencies."""
    [port] = free_ports(1)
    with fresh_queue("orderflow-bench-queue") as queue:
        env = clean_environ(
            {
                "ORDERFLOW_DATABASE_URL": database_url,
                "ORDERFLOW_ADMIN_TOKEN": "bench-token",
                "ORDERFLOW_BOBS_POST_WEBHOOK_SECRET": "a-webhook-secret-of-enough-length",
                "ORDERFLOW_INTAKE_URL": BROKER,
                "ORDERFLOW_INTAKE_QUEUE": queue,
            }
        )
        run = [sys.executable, "-m", "orderflow"]
        serve = subprocess.Popen([*run, "serve", "--port", str(port)], env=env)
        intake = subprocess.Popen([*run, "intake"], env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, serve)
            report = bench_intake(env, "--via", "queue", "--orders", "300", url=url)
            assert (report["via"], report["accepted"], report["errors"]) == ("queue", 300, {})
            assert report["p99_ms"] >= report["p50_ms"] > 0
        finally:
            for proc in (intake, serve):
                proc.send_signal(signal.SIGTERM)
            assert intake.wait(timeout=40) == 0
            serve.wait(timeout=40)  # uvicorn re-raises SIGTERM after its clean shutdown: -15
