"""Group commit of carrier webhooks: events that arrive together are applied in one transaction.

At 100 orders a second Bob's Post sends 400 webhooks a second; one transaction each spent most
of the API's time on round trips. A group stores its events in one statement, locks their
orders in one and applies them in memory (see `tracking.observe_many`). If a group fails for a
reason that is not about the database being unavailable, its events are applied again one by
one, so that one poisoned event can only spoil its own request (which Bob's Post retries).
"""

from __future__ import annotations

import structlog

from orderflow.clock import after
from orderflow.db import Database
from orderflow.grouping import UNAVAILABLE, Grouper
from orderflow.orders import service
from orderflow.shipping import tracking

log = structlog.get_logger("orderflow.webhooks")
ACTOR = "carrier:webhook"


class WebhookCommit(Grouper[tracking.Observation, str]):
    what = "webhooks"

    def __init__(self, db: Database, *, poll_seconds: float, queue_limit: int = 5000) -> None:
        super().__init__(queue_limit=queue_limit)
        self._db = db
        self._poll_seconds = poll_seconds

    def run_group(self, observations: list[tracking.Observation]) -> list[str | Exception]:
        try:
            return list(self._apply(observations))
        except UNAVAILABLE:
            raise
        except Exception:
            if len(observations) == 1:
                raise
            log.warning("webhooks.group_failed", webhooks=len(observations), exc_info=True)
        return self.one_by_one(observations)

    def _apply(self, observations: list[tracking.Observation]) -> list[str]:
        with self._db.transaction() as session, service.deferred_writes(session):
            return tracking.observe_many(
                session, observations, actor=ACTOR, next_poll_at=after(self._poll_seconds)
            )
