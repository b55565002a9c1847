"""Which conditions are incidents, judged from the database every check (pure of outside I/O).

Developers (Slack): a dependency down longer than a threshold; dead letters (grouped by cause,
re-told at most every so often while new ones arrive); due work waiting longer than a
threshold. Logistics (e-mail): a carrier outage long enough to delay deliveries (with the
orders affected); a parcel not collected in time. Lost and returned parcels are raised where
they happen (see `parcel_failed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orderflow.alerts.incidents import (
    DEVELOPERS,
    LOGISTICS,
    already_told,
    open_incidents,
    raise_condition,
    resolve,
    since,
)
from orderflow.alerts.models import Incident
from orderflow.clock import now
from orderflow.deadletters.queries import cause_counts
from orderflow.dependencies import health
from orderflow.dependencies.policy import LABELS
from orderflow.orders.models import Order, order_reference
from orderflow.orders.status import OrderStatus
from orderflow.orders.workflow import DEPENDENCY_OF, TRACK
from orderflow.tasks.models import Task, TaskStatus


@dataclass(frozen=True)
class Thresholds:
    dependency_down: timedelta
    backlog_age: timedelta
    delivery_delay: timedelta
    repeat_every: timedelta


def evaluate(session: Session, limits: Thresholds) -> None:
    at = now()
    open_now = open_incidents(session)
    active: set[str] = set()
    states = health.states(session)

    for dep in states.values():
        down_for = at - dep.state_since
        if dep.state != health.OPEN:
            continue
        label = LABELS.get(dep.name, dep.name)
        if down_for >= limits.dependency_down:
            key = f"dependency_down:{dep.name}"
            active.add(key)
            raise_condition(
                session,
                key,
                audience=DEVELOPERS,
                title=f"{label} is down",
                text=f"{label} has not answered since {since(dep.state_since)}. Its work waits "
                f"without spending attempts; a probe tests it regularly. Last error: "
                f"{dep.last_error}",
            )
        if dep.name == "bobs_post" and down_for >= limits.delivery_delay:
            active.add("carrier_outage")
            _carrier_outage(session, open_now, limits, since(dep.state_since))

    causes = cause_counts(session)
    if causes:
        active.add("dead_letters")
        total = sum(int(c["count"]) for c in causes)
        newest = int(
            session.scalar(select(func.max(Task.id)).where(Task.status == TaskStatus.DEAD)) or 0
        )
        previous = open_now.get("dead_letters")
        told_up_to = int(previous.details.get("newest_id", 0)) if previous else 0
        lines = [f"{c['count']} x {c['cause']}" for c in causes]
        raise_condition(
            session,
            "dead_letters",
            audience=DEVELOPERS,
            title=f"{total} dead letter(s) need a person",
            text="\n".join(lines[:20]) + ("\n…" if len(lines) > 20 else ""),
            details={"newest_id": newest},
            update_every=limits.repeat_every,
            changed=newest > told_up_to,
            count=total,
        )

    due = (Task.status == TaskStatus.READY) & (Task.run_at <= at)
    for kind, oldest in session.execute(
        select(Task.kind, func.min(Task.run_at)).where(due).group_by(Task.kind)
    ):
        dependency = states.get(DEPENDENCY_OF.get(kind, ""))
        if dependency is not None and dependency.state == health.OPEN:
            continue  # told as the dependency's outage
        if at - oldest >= limits.backlog_age:
            key = f"backlog:{kind}"
            active.add(key)
            raise_condition(
                session,
                key,
                audience=DEVELOPERS,
                title=f"'{kind}' work is falling behind",
                text=f"The oldest due '{kind}' task has waited since {since(oldest)}.",
            )

    for task in session.scalars(
        select(Task).where(
            Task.kind == TRACK,
            Task.status == TaskStatus.DEAD,
            Task.last_error.startswith("not collected"),
        )
    ):
        ref = order_reference(task.order_id or 0)
        if not already_told(session, f"not_collected:{ref}"):
            raise_condition(
                session,
                f"not_collected:{ref}",
                audience=LOGISTICS,
                one_shot=True,
                title=f"Parcel for {ref} was not collected by Bob's Post",
                text=f"{task.last_error}\nPlease chase Bob's Post about {ref}.",
            )

    for key, incident in open_now.items():
        if key not in active:
            resolve(session, incident, _resolved_text(key))


def _carrier_outage(
    session: Session, open_now: dict[str, Incident], limits: Thresholds, down_since: str
) -> None:
    waiting = (
        select(Order.id)
        .where(Order.status.in_([OrderStatus.PAID, OrderStatus.SCHEDULED]))
        .order_by(Order.id)
    )
    ids = list(session.scalars(waiting.limit(10)))
    count = int(session.scalar(select(func.count()).select_from(waiting.subquery())) or 0)
    refs = ", ".join(order_reference(i) for i in ids) + (", …" if count > len(ids) else "")
    previous = open_now.get("carrier_outage")
    told = int(previous.details.get("count", 0)) if previous else 0
    raise_condition(
        session,
        "carrier_outage",
        audience=LOGISTICS,
        title=f"Bob's Post down since {down_since}: {count} order(s) delayed ({refs})",
        text=f"Bob's Post has been unreachable since {down_since}. {count} order(s) cannot be "
        f"booked or tracked until it is back: {refs}. orderflow will book them by itself, "
        "oldest first, as soon as Bob's Post answers again.",
        update_every=limits.repeat_every,
        changed=count > told,
        count=count,
    )


def _resolved_text(key: str) -> str:
    if key.startswith("dependency_down:"):
        name = key.split(":", 1)[1]
        return f"{LABELS.get(name, name)} is answering again; its backlog is draining."
    if key == "carrier_outage":
        return "Bob's Post is back: delayed orders are being booked, oldest first."
    if key == "dead_letters":
        return "No dead letters left."
    return "Back to normal."


def parcel_failed(session: Session, order_id: int, what: str) -> None:
    """A parcel lost or returned to sender: logistics hears of it once."""
    ref = order_reference(order_id)
    raise_condition(
        session,
        f"parcel:{ref}",
        audience=LOGISTICS,
        one_shot=True,
        title=f"Parcel for {ref} {what}",
        text=f"Bob's Post reports the parcel for order {ref} {what}. "
        "The order is now delivery_failed; please decide on a re-send or a refund.",
    )
