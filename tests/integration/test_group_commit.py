"""Group commit never leaves a placement waiting, whenever it arrives."""

from __future__ import annotations

import asyncio

from orderflow.db import Database
from orderflow.orders.group_commit import GroupCommit
from orderflow.orders.placement import LineRequest, Placed, PlacementRequest
from tests.support.intake import arrange_catalog


def test_an_order_placed_right_after_the_previous_one_is_answered(db: Database) -> None:
    """The next POST of a client that was just answered (the queue had just emptied) is placed,
    not left waiting for a drainer that is finishing."""
    customer = arrange_catalog(db, {"WIDGET": 10})
    commit = GroupCommit(db)

    def request(key: str) -> PlacementRequest:
        return PlacementRequest(customer, [LineRequest("WIDGET", 1)], "test", key)

    async def one_client() -> list[Placed]:
        answers = []
        for i in range(3):
            answers.append(await commit.submit(request(f"k-{i}")))  # awaited directly, no task
        return [a for a in answers if isinstance(a, Placed)]

    try:
        placed = asyncio.run(asyncio.wait_for(one_client(), timeout=10))
    finally:
        commit.close()
    assert [p.created for p in placed] == [True, True, True]
