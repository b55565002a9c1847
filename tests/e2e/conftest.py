"""Fixtures for the tests that run orderflow as real processes: the processes, their database."""

from __future__ import annotations

import os
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import databases
from tests.support.processes import ProcessGroup
from tests.support.stack import Stack


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so a fixture can tell that its test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessGroup]:
    """The test's processes: all stopped afterwards; their log tails printed if it failed."""
    group = ProcessGroup(tmp_path)
    try:
        yield group
    finally:
        group.stop_all()
        report = getattr(request.node, "report_call", None)
        if report is None or report.failed or hasattr(report, "wasxfail"):
            print(f"\nlogs of the processes (all in {group.logs}):\n{group.tails(60)}")


@pytest.fixture
def own_pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test alone (the CLI migrates it)."""
    if not databases.postgres_available():
        if os.environ.get("ORDERFLOW_TESTS_WITHOUT_POSTGRES") == "1":
            pytest.skip("PostgreSQL is not running and ORDERFLOW_TESTS_WITHOUT_POSTGRES=1")
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (see README: Tests)")
    name = databases.create_pg_database()
    try:
        yield databases.pg_url(name)
    finally:
        databases.drop_pg_database(name)


@pytest.fixture
def working(stack: Stack) -> Iterator[None]:
    """The stack's worker running in the background, as in production."""
    stop = threading.Event()
    thread = threading.Thread(target=stack.worker.run, args=(stop,), name="stack-worker")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per browser-test module (Playwright's `Browser`)."""
    from tests.support.browser import chromium  # Playwright only where a test asks for it

    with chromium() as b:
        yield b
