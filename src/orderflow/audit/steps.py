"""The periodic anchoring of every chain head (one such task for all workers)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from orderflow.audit.anchors import anchor_if_due
from orderflow.clock import now
from orderflow.db import Database
from orderflow.tasks.queue import ClaimedTask
from orderflow.tasks.step import Reschedule

ANCHOR = "audit_anchor"


class AnchorStep:
    kind = ANCHOR
    dependency = None

    def __init__(self, db: Database, export_dir: Path | None, every: float) -> None:
        self.db = db
        self.export_dir = export_dir
        self.every = every

    def prepare(self, session: Session, task: ClaimedTask) -> dict[str, Any]:
        return {}

    def perform(self, work: dict[str, Any]) -> bool:
        # Its own transactions, then the export to the file outside the database.
        return anchor_if_due(self.db, self.export_dir, self.every)

    def complete(self, session: Session, task: ClaimedTask, anchored: bool) -> Reschedule:
        return Reschedule(now() + timedelta(seconds=self.every))
