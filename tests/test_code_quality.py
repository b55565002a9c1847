"""The code is formatted, linted and fully typed: the same checks CI runs, as tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_finds_no_lint() -> None:
    """ruff check passes on src and tests."""
    result = _run("ruff", "check", "src", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_applied() -> None:
    """Every file is formatted as ruff format would."""
    result = _run("ruff", "format", "--check", "src", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_passes() -> None:
    """mypy --strict (pyproject) passes on the package and the tests."""
    result = _run("mypy", "src/orderflow", "tests")
    assert result.returncode == 0, result.stdout + result.stderr
