"""Open, update and resolve incidents; each change that people must hear of queues a message.

Messages are durable tasks (`alert_slack`, `alert_email`), so an unreachable Slack or mail
server delays an alert but never loses it, and never holds up an order.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from orderflow.alerts.models import Incident
from orderflow.clock import now
from orderflow.tasks import queue

DEVELOPERS, LOGISTICS = "developers", "logistics"
SLACK, EMAIL = "alert_slack", "alert_email"


def _tell(session: Session, incident: Incident, event: str, text: str) -> None:
    kind = SLACK if incident.audience == DEVELOPERS else EMAIL
    at = now()
    key = f"alert:{incident.id}:{event}:{at.isoformat()}"
    told = {"event": event, "at": at.isoformat(), "channel": kind, "task_key": key, "text": text}
    incident.messages = [*(incident.messages or []), told]
    queue.enqueue(
        session,
        kind,
        key,
        payload={
            "incident_id": incident.id,
            "event": event,
            "title": incident.title,
            "text": text,
            "key": incident.key,
        },
    )


def open_incidents(session: Session, prefix: str = "") -> dict[str, Incident]:
    rows = session.scalars(
        select(Incident).where(Incident.open_key.is_not(None), Incident.key.startswith(prefix))
    )
    return {i.key: i for i in rows}


def raise_condition(
    session: Session,
    key: str,
    *,
    audience: str,
    title: str,
    text: str,
    details: dict[str, Any] | None = None,
    update_every: timedelta | None = None,
    changed: bool = False,
    one_shot: bool = False,
    count: int | None = None,
) -> Incident:
    """The condition holds now: open its incident (told once), or keep the open one.

    An open incident is told again when `changed` and `update_every` has passed since it was
    last told, or at once when its `count` (of dead letters, of delayed orders) has at least
    doubled since it was last told: nobody is left believing "11" while 200 pile up, and a
    pile of any size is a handful of messages. A `one_shot` incident (a lost parcel) is told
    once and closed at once.
    """
    details = dict(details or {})
    if count is not None:
        details["count"] = count
    incident = session.scalar(select(Incident).where(Incident.open_key == key))
    at = now()
    if incident is None:
        incident = Incident(
            key=key,
            open_key=None if one_shot else key,
            audience=audience,
            title=title,
            details={**details, "told_count": count} if count is not None else details,
            opened_at=at,
            last_notified_at=at,
            resolved_at=at if one_shot else None,
        )
        session.add(incident)
        session.flush()
        _tell(session, incident, "opened", text)
        return incident
    told_count = incident.details.get("told_count")
    due = update_every is not None and at - incident.last_notified_at >= update_every
    grew = count is not None and told_count is not None and count >= 2 * int(told_count) > 0
    if (changed and due) or grew:
        incident.title = title
        incident.last_notified_at = at
        told_count = count
        _tell(session, incident, "update", text)
    if details:
        incident.details = {**details, "told_count": told_count} if count is not None else details
    return incident


def already_told(session: Session, key: str) -> bool:
    """For one-shot incidents: was this one raised before?"""
    return session.scalar(select(Incident.id).where(Incident.key == key).limit(1)) is not None


def resolve(session: Session, incident: Incident, text: str) -> None:
    incident.open_key = None
    incident.resolved_at = now()
    _tell(session, incident, "resolved", text)


def since(value: datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC"
