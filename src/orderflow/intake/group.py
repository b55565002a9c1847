"""Group commit: many messages' orders in one transaction, each all-or-nothing under a savepoint.

A refused message's dead letter is written in the same transaction as the group's orders, so
once the transaction commits every message of the group is settled (placed, replayed or
recorded) and the whole group may be acknowledged. A message delivered again is judged again:
its idempotency key makes it a replay, and a refusal is recorded once per body. A database
failure (connection lost, deadlock, locked) raises out of `GroupCommit`: nothing is settled,
nothing may be acked.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from functools import partial

import structlog
from sqlalchemy import select
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.orm import Session

from orderflow.catalog.models import Product
from orderflow.db import Database
from orderflow.errors import DomainError
from orderflow.intake import refusals
from orderflow.intake.messages import OrderMessage, Refusal, dead_letter_key, parse
from orderflow.orders.placement import Outcome as PlacementOutcome
from orderflow.orders.placement import PlacementRequest, Refused, place_orders
from orderflow.orders.service import place_order
from orderflow.tasks.errors import ErrorClass, describe
from orderflow.tasks.models import Priority

log = structlog.get_logger("orderflow.intake")

# The database itself failing: the group is retried, never settled message by message.
DATABASE_DOWN = (OperationalError, InterfaceError)


def _systemic(exc: BaseException) -> bool:
    """The database failing as a whole (down, locked, deadlocked, a column it does not know):
    not this message's fault, so the group is retried and nothing is acked. A value it cannot
    take (DataError) or a constraint (IntegrityError) is about this message."""
    return isinstance(exc, DBAPIError) and not isinstance(exc, DataError | IntegrityError)


class Outcome(StrEnum):
    PLACED = "placed"
    REPLAYED = "replayed"  # its idempotency key already has this order: nothing new
    REFUSED = "refused"  # recorded as a dead letter now
    KNOWN = "known"  # refused again: its dead letter exists already


@dataclass(frozen=True)
class Inbound:
    body: bytes
    message_id: str | None = None


@dataclass(frozen=True)
class Placed:
    order_id: int
    created: bool  # False: the key already had this order (a replay)


def place_all(session: Session, msgs: list[OrderMessage], *, actor: str) -> list[Placed | Refusal]:
    """Place each message's order, each all-or-nothing; a refusal spoils no other.

    The whole group in one set-based placement (`placement.place_orders`, which decides every
    order before writing any); if that fails for another reason than the database itself (a
    key another consumer committed meanwhile, a value one message trips on), the group is
    placed message by message instead, each under its own savepoint."""
    _lock_stock(session, {line.sku for msg in msgs for line in msg.lines})
    requests = [
        PlacementRequest(msg.customer_id, msg.lines, actor, msg.idempotency_key, Priority.BULK)
        for msg in msgs
    ]
    try:
        with session.begin_nested():
            outcomes = place_orders(session, requests, lock_first=True)
    except Exception as exc:
        if _systemic(exc):
            raise
        return [_place_one(session, msg, actor) for msg in msgs]
    return [_settled(outcome) for outcome in outcomes]


def _settled(outcome: PlacementOutcome) -> Placed | Refusal:
    if isinstance(outcome, Refused):
        error = outcome.error
        return Refusal(error.status_code, error.code, error.message, ErrorClass.PERMANENT)
    return Placed(outcome.order_id, outcome.created)


def _lock_stock(session: Session, skus: set[str]) -> None:
    """Take the group's stock rows in SKU order up front. Each order reserves its lines in SKU
    order, but a group holds its rows until it commits, so two groups (or a group and an API
    request) reserving in their own order could deadlock; one global order cannot (PostgreSQL;
    SQLite has one writer anyway)."""
    if skus and session.get_bind().dialect.name == "postgresql":
        session.execute(
            select(Product.sku)
            .where(Product.sku.in_(sorted(skus)))
            .order_by(Product.sku)
            .with_for_update()
        )


def _place_one(session: Session, msg: OrderMessage, actor: str) -> Placed | Refusal:
    for attempt in (1, 2):
        try:
            with session.begin_nested():
                order, created = place_order(
                    session,
                    customer_id=msg.customer_id,
                    lines=msg.lines,
                    actor=actor,
                    idempotency_key=msg.idempotency_key,
                    priority=Priority.BULK,
                )
            return Placed(order.id, created)
        except DomainError as exc:
            return Refusal(exc.status_code, exc.code, exc.message, ErrorClass.PERMANENT)
        except IntegrityError as exc:
            # Another consumer committed the same key meanwhile: once more finds its order.
            if attempt == 2:
                return Refusal(500, "poison", describe(exc), ErrorClass.POISON)
        except Exception as exc:
            if _systemic(exc):
                raise
            # A bug this message trips, a value the database cannot take: this message only.
            return Refusal(500, "poison", describe(exc), ErrorClass.POISON)
    raise AssertionError("unreachable")


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
            # Messages refused before: sent again, they are judged again, as a repeated
            # POST /orders would be; only their refusal is not recorded twice.
            recorded = refusals.already_recorded(session, set(keys))
            settled: dict[int, Placed | Refusal] = {}
            to_place: list[tuple[int, OrderMessage]] = []
            for i, inbound in enumerate(group):
                parsed = parse(inbound.body)
                if isinstance(parsed, Refusal):
                    settled[i] = parsed
                else:
                    to_place.append((i, parsed))
            placed = place_all(session, [m for _, m in to_place], actor=self.actor)
            settled.update(zip((i for i, _ in to_place), placed, strict=True))
            for i in sorted(settled):
                outcome = self._record(session, group[i], keys[i], settled[i], recorded)
                outcomes[outcome] += 1
        return outcomes

    def _record(
        self,
        session: Session,
        inbound: Inbound,
        key: str,
        result: Placed | Refusal,
        recorded: set[str],
    ) -> Outcome:
        if isinstance(result, Placed):
            if key in recorded:  # refused once, accepted now (the cause was fixed meanwhile)
                refusals.resolve(session, key, result.order_id, worker=self.worker)
            return Outcome.PLACED if result.created else Outcome.REPLAYED
        if key in recorded:
            return Outcome.KNOWN
        recorded.add(key)  # the same body twice in one group: recorded once
        record = partial(
            refusals.record,
            session,
            key,
            inbound.body,
            result,
            worker=self.worker,
            queue=self.queue,
            message_id=inbound.message_id,
        )
        try:
            with session.begin_nested():
                new = record()
        except Exception as exc:
            if _systemic(exc):
                raise
            # Whatever the database would not store (a body it cannot take as text, say) must
            # not block the group forever: kept all the same, in base64 and ASCII.
            log.exception("intake.refusal_stored_plain", key=key)
            with session.begin_nested():
                new = record(plain=True)
        return Outcome.REFUSED if new else Outcome.KNOWN
