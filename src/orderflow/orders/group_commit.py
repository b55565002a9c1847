"""Group commit of placements: orders that arrive together share one transaction.

Each order stays all or nothing (see `placement.place_orders`). If a group fails for a reason
that is not about the database being unavailable, its orders are placed again one by one, each
in its own transaction, so that a poisoned order can only spoil itself.
"""

from __future__ import annotations

import structlog
from sqlalchemy.exc import IntegrityError, OperationalError

from orderflow.db import Database
from orderflow.grouping import UNAVAILABLE, Grouper
from orderflow.orders.placement import Outcome, PlacementRequest, place_orders

log = structlog.get_logger("orderflow.placement")

RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected


class GroupCommit(Grouper[PlacementRequest, Outcome]):
    what = "orders"

    def __init__(self, db: Database, *, queue_limit: int = 5000) -> None:
        super().__init__(queue_limit=queue_limit)
        self._db = db

    def run_group(self, requests: list[PlacementRequest]) -> list[Outcome | Exception]:
        """One transaction for the group (blocking: runs in the executor's threads)."""
        for attempt in range(3):
            try:
                with self._db.transaction() as session:
                    return list(place_orders(session, requests, lock_first=attempt > 0))
            except IntegrityError:
                # A concurrent transaction took one of these Idempotency-Keys (the next attempt
                # finds the order and answers it as a replay) or the stock this group counted
                # on (the next attempt locks stock as it reads it).
                continue
            except OperationalError as exc:
                if getattr(exc.orig, "sqlstate", None) not in RETRYABLE_SQLSTATES:
                    raise
            except UNAVAILABLE:
                raise
            except Exception:
                if len(requests) == 1:
                    raise
                log.exception("placement.group_failed", orders=len(requests))
                break
        if len(requests) == 1:
            raise RuntimeError("placement kept conflicting on its Idempotency-Key")
        return self.one_by_one(requests)
