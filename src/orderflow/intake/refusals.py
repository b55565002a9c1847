"""A refused intake message becomes a dead letter: a task of kind `intake`, status `dead`, no
order, its raw body and reason in the payload, one attempt record as evidence. The dead-letters
API and CLI show it grouped by cause; a redrive tries the placement again (see `step.py`)."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from orderflow.clock import now
from orderflow.deadletters.causes import fingerprint
from orderflow.intake.messages import Refusal, known_key, raw_payload
from orderflow.tasks.models import Task, TaskAttempt, TaskStatus

KIND = "intake"


def already_recorded(session: Session, keys: Collection[str]) -> set[str]:
    """Which of these dead-letter keys exist (whatever became of them since)."""
    if not keys:
        return set()
    return set(session.scalars(select(Task.key).where(Task.key.in_(list(keys)))))


def resolve(session: Session, key: str, order_id: int, *, worker: str) -> None:
    """The message of a dead letter was sent again and accepted: the dead letter is done and
    names its order, with an attempt record saying so (it would only be a replay if redriven)."""
    at = now()
    row = session.execute(
        update(Task)
        .where(Task.key == key, Task.status == TaskStatus.DEAD)
        .values(
            status=TaskStatus.DONE,
            order_id=order_id,
            attempts=Task.attempts + 1,
            finished_at=at,
        )
        .returning(Task.id, Task.attempts)
    ).first()
    if row is not None:
        session.add(
            TaskAttempt(
                task_id=row.id,
                attempt=row.attempts,
                worker=worker,
                started_at=at,
                finished_at=at,
                outcome="ok",
            )
        )


def record(
    session: Session,
    key: str,
    body: bytes,
    refusal: Refusal,
    *,
    worker: str,
    queue: str,
    message_id: str | None = None,
    plain: bool = False,
) -> bool:
    """Record the refusal once per key; True if this call recorded it. `plain`: the body in
    base64 and every text in ASCII, for what the database would not store otherwise."""
    at = now()
    text = ascii if plain else _storable
    payload = {
        **raw_payload(body, base64=plain),
        "idempotency_key": None if plain else known_key(body),
        "status": refusal.status,
        "code": refusal.code,
        "reason": text(refusal.message),
        "queue": queue,
        "message_id": message_id,
    }
    values = {
        "key": key,
        "kind": KIND,
        "order_id": None,
        "payload": payload,
        "status": TaskStatus.DEAD,
        "run_at": at,
        "attempts": 1,
        "error_class": refusal.error_class,
        "last_error": text(refusal.reason),
        "cause": fingerprint(KIND, refusal.error_class, text(refusal.reason)),
        "first_failed_at": at,
        "last_failed_at": at,
        "created_at": at,
        "finished_at": at,
    }
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(Task).values(values).on_conflict_do_nothing(index_elements=["key"])
    task_id = session.execute(stmt.returning(Task.id)).scalar()
    if task_id is None:
        return False
    session.add(
        TaskAttempt(
            task_id=task_id,
            attempt=1,
            worker=worker,
            started_at=at,
            finished_at=at,
            outcome=refusal.error_class,
            http_status=refusal.status,
            error=text(refusal.reason),
        )
    )
    return True


def _storable(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and a reason may quote the message (a field name, say).
    return value.replace("\x00", "\\x00")
