"""Incidents as operators read them: open and resolved, with each message and what became of it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orderflow.alerts.incidents import SLACK
from orderflow.alerts.models import Incident
from orderflow.tasks.models import Task


def incidents_view(
    session: Session, *, open_only: bool = False, limit: int = 50, before: int | None = None
) -> list[dict[str, Any]]:
    """The newest incidents (open first), each message with its task's status (one lookup by
    the tasks' unique keys for the whole page). `before`: the next page of older ones — only
    resolved incidents older than that id (every open one is on the first page)."""
    query = select(Incident).order_by(Incident.resolved_at.is_not(None), Incident.id.desc())
    if open_only:
        query = query.where(Incident.open_key.is_not(None))
    if before is not None:
        query = query.where(Incident.open_key.is_(None), Incident.id < before)
    incidents = list(session.scalars(query.limit(limit)))
    keys = [m["task_key"] for i in incidents for m in (i.messages or [])]
    tasks = (
        {
            key: (status, attempts, error)
            for key, status, attempts, error in session.execute(
                select(Task.key, Task.status, Task.attempts, Task.last_error).where(
                    Task.key.in_(keys)
                )
            )
        }
        if keys
        else {}
    )
    views = []
    for incident in incidents:
        messages = []
        for told in incident.messages or []:
            status, attempts, error = tasks.get(told["task_key"], (None, 0, None))
            messages.append({**told, "status": status, "attempts": attempts, "error": error})
        views.append(
            {
                "id": incident.id,
                "key": incident.key,
                "audience": incident.audience,
                "channel": SLACK if incident.audience == "developers" else "alert_email",
                "title": incident.title,
                "details": incident.details,
                "opened_at": incident.opened_at,
                "resolved_at": incident.resolved_at,
                "last_notified_at": incident.last_notified_at,
                "messages": messages,
            }
        )
    return views


def counts(session: Session) -> dict[str, int]:
    """How many incidents are open and resolved."""
    rows = session.execute(
        select(Incident.open_key.is_(None), func.count()).group_by(Incident.open_key.is_(None))
    ).all()
    found = {bool(resolved): int(n) for resolved, n in rows}
    return {"open": found.get(False, 0), "resolved": found.get(True, 0)}
