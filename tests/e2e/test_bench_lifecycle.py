"""`orderflow bench lifecycle` runs the whole lifecycle as real processes and reports its cost."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.databases import create_pg_database, drop_pg_database, pg_url


@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.timeout(240)
def test_bench_lifecycle_delivers_every_order_and_reports_cpu_per_order() -> None:
    """30 orders, 1 worker: all delivered; orders/s, CPU per order, rows per order and each
    process's peak memory reported."""
    name = create_pg_database()
    options = ["--orders", "30", "--workers", "1", "--clients", "4", "--json"]
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "orderflow",
                "bench",
                "lifecycle",
                *options,
                "--database-url",
                pg_url(name),
            ],
            capture_output=True,
            text=True,
            timeout=220,
        )
    finally:
        drop_pg_database(name)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["orders"], result["delivered"]) == (30, 30)
    assert result["seconds"] > 0
    assert result["cpu_ms"]["serve"] > 0 and result["cpu_ms"]["worker"] > 0
    assert result["rows_per_order"] > 0
    assert 20 < result["peak_rss_mib"]["serve"] < 1000, result["peak_rss_mib"]
