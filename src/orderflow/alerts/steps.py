"""Alert steps: the delivery of each message (Slack or e-mail)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import structlog
from sqlalchemy.orm import Session

from orderflow.alerts import incidents
from orderflow.alerts.slack import SlackClient, escape
from orderflow.notifications.mailer import Mailer
from orderflow.tasks import queue
from orderflow.tasks.queue import ClaimedTask

log = structlog.get_logger("orderflow.alerts")
EMOJI = {"opened": ":red_circle:", "update": ":warning:", "resolved": ":white_check_mark:"}


class SlackAlertStep:
    kind = incidents.SLACK
    dependency = "slack"
    marks_performed = True  # a Slack message has no idempotency key: exactly one, per message

    def __init__(self, slack: SlackClient | None) -> None:
        self.slack = slack
        self._one_at_a_time = threading.Lock()

    def prepare(self, session: Session, task: ClaimedTask) -> dict[str, Any] | None:
        if queue.performed(task):
            return None  # posted by an earlier attempt that died before recording it
        return dict(task.payload)

    def perform(self, alert: dict[str, Any], mark: Callable[[], None] | None = None) -> None:
        # Titles and texts quote errors, causes and data from outside: escaped, all of it.
        title, body = escape(alert["title"]), escape(alert["text"])
        text = f"{EMOJI.get(alert['event'], '')} *{title}*\n{body}".strip()
        if self.slack is None:
            log.warning(
                "alert.unsent",
                channel="slack",
                reason="no Slack webhook configured",
                title=alert["title"],
                incident_event=alert["event"],
            )
            return
        with self._one_at_a_time:  # at most one message posted but not yet recorded
            self.slack.post(text)
            if mark is not None:
                mark()

    def complete(self, session: Session, task: ClaimedTask, result: None) -> None:
        return None


class EmailAlertStep:
    kind = incidents.EMAIL
    dependency = "smtp"
    marks_performed = True

    def __init__(self, mailer: Mailer, mail_from: str, to: str | None) -> None:
        self.mailer = mailer
        self.mail_from = mail_from
        self.to = to

    def prepare(self, session: Session, task: ClaimedTask) -> EmailMessage | None:
        alert = task.payload
        if queue.performed(task):
            return None  # sent by an earlier attempt that died before recording it
        if self.to is None:
            log.warning(
                "alert.unsent",
                channel="email",
                reason="no logistics e-mail configured",
                title=alert["title"],
                incident_event=alert["event"],
            )
            return None
        message = EmailMessage()
        message["From"] = self.mail_from
        message["To"] = self.to
        prefix = {"resolved": "Resolved: ", "update": "Update: "}.get(alert["event"], "")
        message["Subject"] = f"[orderflow] {prefix}{alert['title']}"
        domain = self.mail_from.rpartition("@")[2] or "orderflow.invalid"
        message["Message-ID"] = f"<alert.{task.id}@{domain}>"  # stable across retries
        message["Date"] = formatdate(usegmt=True)
        message.set_content(alert["text"] + "\n\n-- orderflow\n")
        return message

    def perform(self, message: EmailMessage, mark: Callable[[], None] | None = None) -> None:
        self.mailer.send(message, on_accepted=mark)

    def complete(self, session: Session, task: ClaimedTask, result: None) -> None:
        return None
