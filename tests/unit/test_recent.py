"""The home page's reuse of recent counts: fresh ones reused, stale ones shown once more while a
background thread recounts, old ones recounted before answering."""

from __future__ import annotations

import itertools
import threading
import time

from orderflow.web.console.recent import STALE_AFTER, Recent


def test_a_recent_value_is_reused_then_recounted_in_the_background() -> None:
    """Within `seconds` the first count is reused; just after, it is shown once more while the
    recount runs (the page does not wait), and the next page has the new count."""
    counter = itertools.count(1)
    started = threading.Event()
    release = threading.Event()

    def compute() -> int:
        value = next(counter)
        if value > 1:
            started.set()
            assert release.wait(5)
        return value

    recent = Recent(seconds=0.2)
    assert recent.get("k", compute) == 1
    assert recent.get("k", compute) == 1
    time.sleep(0.25)
    before = time.monotonic()
    assert recent.get("k", compute) == 1  # stale: shown once more, recount started
    assert time.monotonic() - before < 0.1
    assert started.wait(5)
    release.set()
    deadline = time.monotonic() + 5
    while recent.get("k", compute) != 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert recent.get("k", compute) == 2


def test_a_value_nobody_looked_at_for_long_is_recounted_before_answering() -> None:
    """Older than STALE_AFTER x seconds: counted again in the request; 0 s: always counted."""
    counter = itertools.count(1)
    recent = Recent(seconds=0.05)
    assert recent.get("k", lambda: next(counter)) == 1
    time.sleep(0.05 * STALE_AFTER + 0.02)
    assert recent.get("k", lambda: next(counter)) == 2
    never = Recent(seconds=0)
    assert [never.get("k", lambda: next(counter)) for _ in range(2)] == [3, 4]
