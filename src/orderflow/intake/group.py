"""Group commit: many messages' orders in one transaction, each all-or-nothing under a savepoint.

A refused message's dead letter is written in the same transaction as the group's orders, so
once the transaction commits every message of the group is settled (placed, replayed or
recorded) and the whole group may be acknowledged. A database failure (connection lost,
deadlock, locked) raises out of `commit_group`: nothing is settled, nothing may be acked.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from orderflow.db import Database
from orderflow.errors import DomainError
from orderflow.intake import refusals
from orderflow.intake.messages import OrderMessage, Refusal, dead_letter_key, parse
from orderflow.orders.service import place_order
from orderflow.tasks.errors import ErrorClass, describe

# The database itself failing: the group is retried, never settled message by message.
DATABASE_DOWN = (OperationalError, InterfaceError)


class Outcome(StrEnum):
    PLACED = "placed"
    REPLAYED = "replayed"  # its idempotency key already has this order: nothing new
    REFUSED = "refused"  # recorded as a dead letter now
    KNOWN = "known"  # refused earlier (a redelivery): its dead letter exists already


@dataclass(frozen=True)
class Inbound:
    body: bytes
    message_id: str | None = None


def place(session: Session, msg: OrderMessage, *, actor: str) -> tuple[int, bool]:
    """The one call into placement (swap in a set-based one here): (order id, created now)."""
    order, created = place_order(
        session,
        customer_id=msg.customer_id,
        lines=msg.lines,
        actor=actor,
        idempotency_key=msg.idempotency_key,
    )
    return order.id, created


@dataclass
class GroupCommit:
    db: Database
    queue: str
    actor: str  # who placed the orders, in their history
    worker: str  # who refused a message, in its attempt record

    def __call__(self, group: list[Inbound]) -> Counter[Outcome]:
        keys = [dead_letter_key(m.body) for m in group]
        outcomes: Counter[Outcome] = Counter()
        with self.db.transaction() as session:
            known = refusals.already_recorded(session, set(keys))
            for inbound, key in zip(group, keys, strict=True):
                if key in known:
                    outcomes[Outcome.KNOWN] += 1
                    continue
                outcome = self._settle(session, inbound, key)
                if outcome is Outcome.REFUSED:
                    known.add(key)
                outcomes[outcome] += 1
        return outcomes

    def _settle(self, session: Session, inbound: Inbound, key: str) -> Outcome:
        parsed = parse(inbound.body)
        refusal = parsed if isinstance(parsed, Refusal) else self._place(session, parsed)
        if isinstance(refusal, Outcome):
            return refusal
        refusals.record(
            session,
            key,
            inbound.body,
            refusal,
            worker=self.worker,
            queue=self.queue,
            message_id=inbound.message_id,
        )
        return Outcome.REFUSED

    def _place(self, session: Session, msg: OrderMessage) -> Outcome | Refusal:
        for attempt in (1, 2):
            try:
                with session.begin_nested():
                    _, created = place(session, msg, actor=self.actor)
                return Outcome.PLACED if created else Outcome.REPLAYED
            except DomainError as exc:
                return Refusal(exc.status_code, exc.code, exc.message, ErrorClass.PERMANENT)
            except DATABASE_DOWN:
                raise
            except IntegrityError as exc:
                # Another consumer committed the same key meanwhile: once more finds its order.
                if attempt == 2:
                    return Refusal(500, "poison", describe(exc), ErrorClass.POISON)
            except Exception as exc:  # a bug or unstorable data: this message only
                return Refusal(500, "poison", describe(exc), ErrorClass.POISON)
        raise AssertionError("unreachable")
