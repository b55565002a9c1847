"""Group commit: a request sent on its own is not held up behind a queue of batches."""

from __future__ import annotations

import asyncio
import time

from orderflow.grouping import Grouper


class Slow(Grouper[str, str]):
    """Writes a group in 50 ms and notes which groups were written, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[list[str]] = []

    def run_group(self, requests: list[str]) -> list[str | Exception]:
        time.sleep(0.05)
        self.written.append(requests)
        return list[str | Exception](requests)


def test_a_single_request_goes_before_batches_queued_ahead_of_it() -> None:
    """Four batches sent at once, then one order: it is written after the first batch at most."""

    async def scenario() -> list[list[str]]:
        grouper = Slow()
        batches = [asyncio.ensure_future(grouper.submit_many([f"b{i}"])) for i in range(4)]
        await asyncio.sleep(0.01)  # the first batch is being written
        assert await grouper.submit("single") == "single"
        await asyncio.gather(*batches)
        grouper.close()
        return grouper.written

    written = asyncio.run(scenario())
    assert written.index(["single"]) <= 1
    assert sorted(w[0] for w in written) == ["b0", "b1", "b2", "b3", "single"]
