"""From what a chaos run observed to its figures and verdicts: pure functions, no I/O.

`Evidence` is everything the run gathered (from the API, the simulators' counters, the mail
sink, `/proc`); `figures` turns it into `Figures` (every number the summary and the JSON show);
`violations` says which promises were broken, `unseen_faults` which faults never happened (a
run that injected nothing proves nothing), and `summary` prints the block.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from orderflow.config import Settings
from orderflow.orders.status import RANK, OrderStatus

DONE = frozenset({OrderStatus.SHIPPED.value, OrderStatus.DELIVERED.value})
_RANK = {status.value: rank for status, rank in RANK.items()}
_REFERENCE = re.compile(r"ORD-\d+")

# How much a process may grow during the outage before it counts as growth rather than noise
# (the allocator and the connection pool settle in steps), and how old a process must be
# before its samples count (imports, the first batches, the pool filling). Memory and
# connections are judged on the processes that lived through most of the outage (serve and
# the worker spared from kills meanwhile); log volume on every process, window by window.
# See docs/chaos.md.
RSS_TOLERANCE_KIB = 8 * 1024
CONNECTION_TOLERANCE = 2  # a pool opening one or two more when requests happen to overlap
LOG_RATE_TOLERANCE = 0.5  # late third may log at most 50 % more per second than the early one
LOG_RATE_FLOOR = 512.0  # bytes/s per process below which a rate is noise (a probe line or two)
WARMUP_SECONDS = 3.0  # before this age a process is importing, starting threads and pools
JUDGED_SHARE = 0.5  # judged processes were sampled (past warm-up) over half the outage or more


# --- what was observed -------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcessSample:
    """One orderflow process (serve or a worker incarnation) at one sampling moment."""

    name: str  # its log name: `serve`, `worker-w1` (shared by the incarnations of w1)
    pid: int
    age: float  # seconds since it was started
    rss_kib: int | None
    db_connections: int | None
    log_bytes: int  # size of its log file


@dataclass(frozen=True)
class Sample:
    """Every orderflow process at one moment of the outage."""

    at: float  # seconds since the outage began
    phase: str  # "503" or "hang"
    processes: tuple[ProcessSample, ...]
    backends: int | None  # PostgreSQL: pg_stat_activity rows of the database (not ours)


@dataclass(frozen=True)
class BacklogSample:
    at: float  # seconds since the run began
    backlog: Mapping[str, int]  # dependency -> tasks due or waiting to be retried
    states: Mapping[str, str]  # dependency -> breaker state


@dataclass
class Evidence:
    """Everything a chaos run gathered, raw."""

    scenario: dict[str, Any]
    accepted: dict[str, int]  # reference -> order id, for every 202
    rejected: Counter[str]  # non-202 answers to placement (after retries), by status
    placement_seconds: float
    statuses: dict[str, str]  # reference -> status, every order the API lists
    histories: dict[str, list[str | None]]  # reference -> history[].to
    charges: dict[str, int]  # Paydesk: charges by order reference
    bookings: dict[str, int]  # Bob's Post: bookings by reference
    mails: list[dict[str, Any]]  # the sink's messages (subject, message_id, …)
    dead_letters: int
    dead_letter_groups: list[dict[str, Any]]  # GET /dead-letters `groups`: cause, step, count
    dead_events: list[dict[str, Any]]  # the workers' `task.dead` log events (even if redriven)
    stock_sold: dict[str, int]  # sku -> units the stock went down by
    stock_ordered: dict[str, int]  # sku -> units the accepted orders asked for
    paydesk_by_status: dict[str, int]
    carrier_by_status: dict[str, int]
    carrier_503_in_outage: int
    carrier_requests_hung: int
    webhooks: dict[str, int]  # Bob's Post: sent, lost, duplicated, failed
    kills: int
    unexpected_exits: list[str]
    outage_seconds: float  # measured, both phases
    recovery_seconds: float | None  # outage end -> every accepted order shipped; None: never
    told_seconds: float | None  # outage end -> every "shipped" e-mail received
    total_seconds: float
    samples: list[Sample] = field(default_factory=list)
    backlog: list[BacklogSample] = field(default_factory=list)
    final_backlog: dict[str, int] = field(default_factory=dict)
    # Bob's Post's request log (`GET /_sim/requests`: [unix time, kind, status]) and the unix
    # time it was switched back on: the drain is measured from them
    carrier_requests: list[list[Any]] = field(default_factory=list)
    carrier_back_at: float | None = None
    # re-sent parcels: replacement's reference -> the reference of the order it replaces
    replaces: dict[str, str] = field(default_factory=dict)


# --- pure helpers -------------------------------------------------------------------------------
def shipped_message_ids(mails: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """The Message-IDs of the "shipped" e-mails by order reference, one entry per delivery (a
    resend of the same message appears twice)."""
    found: dict[str, list[str]] = defaultdict(list)
    for mail in mails:
        subject = str(mail.get("subject", ""))
        match = _REFERENCE.search(subject)
        if match and "shipped" in subject.lower():
            found[match.group(0)].append(str(mail.get("message_id")))
    return dict(found)


def non_forward_moves(history: Sequence[str | None]) -> tuple[int, int]:
    """(moves that did not go strictly forward along placed → … → delivered, moves off that
    path) in one order's history of `to` statuses (None entries are not moves)."""
    backward = off_path = 0
    last = -1
    for status in history:
        if status is None:
            continue
        rank = _RANK.get(status)
        if rank is None:
            off_path += 1
            continue
        if rank <= last:
            backward += 1
        last = max(last, rank)
    return backward, off_path


@dataclass(frozen=True)
class Growth:
    """The largest growth of one metric over one process's own life within the outage."""

    amount: float
    process: str | None  # `name (pid)` of the process that grew most
    seconds: float  # over how long it was measured
    processes: list[str]  # the processes judged


def series(
    samples: Sequence[Sample], metric: str, warmup: float
) -> dict[str, list[tuple[float, float]]]:
    """`name (pid)` -> [(seconds into the outage, value)] of the samples past warm-up."""
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for sample in samples:
        for proc in sample.processes:
            value = getattr(proc, metric)
            if value is not None and proc.age >= warmup:
                out[f"{proc.name} ({proc.pid})"].append((sample.at, float(value)))
    return dict(out)


def lifetime_growth(
    samples: Sequence[Sample], metric: str, warmup: float, share: float = JUDGED_SHARE
) -> Growth:
    """For every process sampled past its warm-up over at least `share` of the outage: its last
    value minus its first. Each process is compared with itself only, so a kill -9 and restart
    neither hides nor fakes growth."""
    if not samples:
        return Growth(0.0, None, 0.0, [])
    span = samples[-1].at - samples[0].at
    grown: list[tuple[float, str, float]] = []  # (growth, process, seconds)
    for name, points in series(samples, metric, warmup).items():
        (first_at, first), (last_at, last) = points[0], points[-1]
        if len(points) >= 2 and last_at - first_at >= share * span:
            grown.append((last - first, name, last_at - first_at))
    if not grown:
        return Growth(0.0, None, 0.0, [])
    amount, process, seconds = max(grown)
    return Growth(amount, process, round(seconds, 1), sorted(g[1] for g in grown))


def log_rates(samples: Sequence[Sample], warmup: float) -> list[tuple[float, float]]:
    """(middle of the window, log bytes per second per process) between consecutive samples,
    counting only processes alive and past their warm-up at both ends of the window."""
    out = []
    for before, after in pairwise(samples):
        then = {p.pid: p for p in before.processes if p.age >= warmup}
        grown, counted = 0, 0
        for proc in after.processes:
            old = then.get(proc.pid)
            if old is not None:
                grown += max(0, proc.log_bytes - old.log_bytes)
                counted += 1
        seconds = after.at - before.at
        if counted and seconds > 0:
            out.append(((before.at + after.at) / 2, grown / seconds / counted))
    return out


def thirds(points: Sequence[tuple[float, float]], span: float) -> tuple[float, float, float]:
    """Mean of the values whose time falls in the first, middle and last third of `span`."""
    buckets: list[list[float]] = [[], [], []]
    for at, value in points:
        if span > 0:
            buckets[min(2, max(0, int(3 * at / span)))].append(value)
    early, middle, late = (round(sum(b) / len(b), 1) if b else 0.0 for b in buckets)
    return early, middle, late


def snapshot(sample: Sample) -> dict[str, Any]:
    """One sampling moment, summed: what the summary shows for early, middle and late."""
    workers = [p for p in sample.processes if p.name != "serve"]
    serve = next((p for p in sample.processes if p.name == "serve"), None)
    return {
        "at_seconds": round(sample.at, 1),
        "phase": sample.phase,
        "workers": len(workers),
        "workers_rss_mib": round(sum(p.rss_kib or 0 for p in workers) / 1024, 1),
        "serve_rss_mib": round((serve.rss_kib or 0) / 1024, 1) if serve else None,
        "db_connections": sum(p.db_connections or 0 for p in sample.processes),
        "pg_backends": sample.backends,
        "log_bytes": sum(p.log_bytes for p in sample.processes),
    }


def _at_fraction(samples: Sequence[Sample], fraction: float) -> Sample:
    span = samples[-1].at
    return min(samples, key=lambda s: abs(s.at - fraction * span))


# --- the figures --------------------------------------------------------------------------------
@dataclass
class Figures:
    """Every number a chaos run reports (the JSON file is exactly this)."""

    scenario: dict[str, Any]
    accepted: int
    rejected: dict[str, int]
    placement_seconds: float
    found: int
    lost: int
    unfinished: int
    statuses: dict[str, int]
    charged: int
    missing_charges: int
    double_charges: int
    extra_charges: int
    booked: int
    missing_bookings: int
    double_bookings: int
    extra_bookings: int
    shipped_emails: int
    missing_shipped_emails: int
    double_shipped_emails: int
    same_message_id_redeliveries: int
    backward_moves: int
    orders_with_backward_moves: int
    off_path_moves: int
    dead_letters: int
    dead_letter_groups: list[dict[str, Any]]
    dead_lettered_during_run: dict[str, int]  # `kind: error` -> task.dead events logged
    stock_mismatches: int
    faults: dict[str, int]
    unexpected_exits: list[str]
    outage_seconds: float
    recovery_seconds: float | None
    told_seconds: float | None
    total_seconds: float
    backlog_peak: dict[str, int]
    backlog_final: dict[str, int]
    breaker_open_seconds: dict[str, float]
    resources: dict[str, Any]
    backlog_series: list[dict[str, Any]]  # once a second: seconds into the run, tasks, breakers
    drain: dict[str, Any] = field(default_factory=dict)  # see `drain`


# --- the drain after the outage: bookings/s against the configured rate ------------------------
CARRIER_KINDS = {  # Bob's Post request kinds (`simulators.chaos.request_kind`) -> what they are
    "POST /v1/shipments": "bookings",
    "GET /v1/shipments?reference": "lookups",
    "GET /v1/shipments/{id}": "polls",
    "POST /v1/shipments/{id}/cancel": "cancels",
}
BOOKED = "booked"  # the simulator's note of a new shipment, at the moment it was made
STEADY_SHARE = 0.8  # the steady part of a drain: its middle 80 % of bookings


def configured_rate(knobs: Mapping[str, str]) -> float:
    """ORDERFLOW_BOBS_POST_RATE_LIMIT as the processes were given it (or its default)."""
    default = Settings.model_fields["bobs_post_rate_limit"].default
    return float(knobs.get("ORDERFLOW_BOBS_POST_RATE_LIMIT", default))


def _rate(count: int, seconds: float) -> float | None:
    return round(count / seconds, 2) if seconds > 0 else None


def _fraction(rate: float | None, configured: float) -> float | None:
    return None if rate is None or configured <= 0 else round(rate / configured, 3)


def drain(
    requests: Sequence[Sequence[Any]],
    back_at: float | None,
    configured: float,
    carrier_limit: float | None = None,
) -> dict[str, Any]:
    """How fast the backlog of bookings went out once the carrier answered again.

    The window runs from `back_at` (the carrier answers again) to the last new booking (the
    backlog of bookings is empty). In it: new bookings per second, over the whole window and
    over its middle 80 % of bookings (the steady part: no probe wait, no stragglers), each as a
    fraction of the `configured` rate; and every request the carrier saw, by kind and status.
    `requests` is the simulator's log: (unix time, kind, status), with a `booked` note per new
    shipment. Empty when the carrier never came back."""
    if back_at is None:
        return {}
    booked = sorted(float(t) for t, kind, _ in requests if kind == BOOKED and t >= back_at)
    out: dict[str, Any] = {
        "configured_rate": configured,
        "carrier_rate_limit": carrier_limit,
        "bookings": len(booked),
    }
    if not booked:
        return out
    end = booked[-1]
    seconds = end - back_at
    # requests up to the answer to the last booking (logged just after its `booked` note)
    answered = min((t for t, k, _ in requests if t >= end and k in CARRIER_KINDS), default=end)
    seen = [(kind, status) for t, kind, status in requests if back_at <= t <= answered]
    calls = [(CARRIER_KINDS.get(kind, "other"), status) for kind, status in seen if kind != BOOKED]
    by_kind = Counter(kind for kind, _ in calls)
    rate = _rate(len(booked), seconds)
    lo, hi = (
        int(len(booked) * (1 - STEADY_SHARE) / 2),
        math.ceil(len(booked) * (1 + STEADY_SHARE) / 2) - 1,
    )
    steady = _rate(hi - lo, booked[hi] - booked[lo]) if hi > lo else None
    per_second = Counter(int(t - back_at) for t in booked)
    out.update(
        seconds=round(seconds, 2),
        first_booking_after_seconds=round(booked[0] - back_at, 2),
        bookings_per_second=rate,
        fraction=_fraction(rate, configured),
        steady_bookings_per_second=steady,
        steady_fraction=_fraction(steady, configured),
        steady_seconds=round(booked[hi] - booked[lo], 2),
        requests=len(calls),
        requests_per_second=_rate(len(calls), seconds),
        requests_fraction=_fraction(_rate(len(calls), seconds), configured),
        requests_by_kind={k: by_kind.get(k, 0) for k in (*CARRIER_KINDS.values(), "other")},
        requests_by_status=dict(sorted(Counter(str(s) for _, s in calls).items())),
        rate_limited_429=sum(1 for _, status in calls if status == 429),
        bookings_each_second=[per_second.get(i, 0) for i in range(int(seconds) + 1)],
    )
    return out


def purchase_of(reference: str, replaces: Mapping[str, str]) -> str:
    """The order whose charge pays for this one: itself, or for a replacement (a re-sent
    parcel) the first order of its line of replacements."""
    seen = {reference}
    while reference in replaces and replaces[reference] not in seen:
        reference = replaces[reference]
        seen.add(reference)
    return reference


def charges_by_purchase(charges: Mapping[str, int], replaces: Mapping[str, str]) -> Counter[str]:
    """Paydesk's charges folded onto what they pay for: a replacement is covered by its
    original's one charge, so a charge of its own counts as a second one for that purchase."""
    folded: Counter[str] = Counter()
    for reference, count in charges.items():
        folded[purchase_of(reference, replaces)] += count
    return folded


def _duplicates(counts: Mapping[str, int]) -> tuple[int, int]:
    """(references counted more than once, the extra counts in all)."""
    return sum(1 for n in counts.values() if n > 1), sum(n - 1 for n in counts.values() if n > 1)


def resources(samples: Sequence[Sample], warmup: float = WARMUP_SECONDS) -> dict[str, Any]:
    """Memory, connections and log volume during the outage, and their growth."""
    if len(samples) < 3:
        return {"samples": len(samples)}
    rss = lifetime_growth(samples, "rss_kib", warmup)
    conns = lifetime_growth(samples, "db_connections", warmup)
    span = samples[-1].at
    early, middle, late = thirds(log_rates(samples, warmup), span)
    backends = [s.backends for s in samples if s.backends is not None]
    third = max(1, len(backends) // 3)
    return {
        "samples": len(samples),
        "points": {
            name: snapshot(_at_fraction(samples, fraction))
            for name, fraction in (("early", 1 / 6), ("middle", 1 / 2), ("late", 5 / 6))
        },
        "rss_growth_kib": round(rss.amount),
        "rss_growth_process": rss.process,
        "rss_growth_over_seconds": rss.seconds,
        "judged_processes": rss.processes,
        "connections_growth": round(conns.amount),
        "connections_growth_process": conns.process,
        "log_bytes_per_second_per_process": {"early": early, "middle": middle, "late": late},
        "log_rate_growth": round(late - early, 1),
        "series": {
            "rss_kib": series(samples, "rss_kib", 0.0),
            "db_connections": series(samples, "db_connections", 0.0),
            "log_bytes": series(samples, "log_bytes", 0.0),
        },
        "pg_backends": {
            "early_max": max(backends[:third]),
            "late_max": max(backends[-third:]),
            "max": max(backends),
        }
        if backends
        else None,
    }


def figures(evidence: Evidence) -> Figures:
    """Count what the run observed against what it accepted."""
    refs = set(evidence.accepted)
    mine = {r: evidence.statuses[r] for r in refs if r in evidence.statuses}
    paid = charges_by_purchase(evidence.charges, evidence.replaces)
    purchases = {purchase_of(r, evidence.replaces) for r in refs}
    charges = {p: paid[p] for p in purchases if paid[p]}
    bookings = {r: n for r, n in evidence.bookings.items() if r in refs}
    mails = {r: ids for r, ids in shipped_message_ids(evidence.mails).items() if r in refs}
    double_charges, extra_charges = _duplicates(charges)
    double_bookings, extra_bookings = _duplicates(bookings)
    backward = off_path = orders_backward = 0
    for ref in refs:
        b, o = non_forward_moves(evidence.histories.get(ref, []))
        backward, off_path, orders_backward = backward + b, off_path + o, orders_backward + (b > 0)
    peak: dict[str, int] = {}
    open_seconds: dict[str, float] = defaultdict(float)
    for before, after in pairwise(evidence.backlog):
        for name, state in before.states.items():
            if state == "open":
                open_seconds[name] += after.at - before.at
    for point in evidence.backlog:
        for name, tasks in point.backlog.items():
            peak[name] = max(peak.get(name, 0), tasks)
    by_status = evidence.carrier_by_status
    return Figures(
        scenario=evidence.scenario,
        accepted=len(refs),
        rejected=dict(evidence.rejected),
        placement_seconds=round(evidence.placement_seconds, 1),
        found=len(mine),
        lost=len(refs) - len(mine),
        unfinished=sum(1 for s in mine.values() if s not in DONE) + len(refs) - len(mine),
        statuses=dict(Counter(mine.values())),
        charged=len(charges),
        missing_charges=sum(1 for r in refs if not paid[purchase_of(r, evidence.replaces)]),
        double_charges=double_charges,
        extra_charges=extra_charges,
        booked=len(bookings),
        missing_bookings=len(refs - set(bookings)),
        double_bookings=double_bookings,
        extra_bookings=extra_bookings,
        shipped_emails=len(mails),
        missing_shipped_emails=len(refs - set(mails)),
        double_shipped_emails=sum(1 for ids in mails.values() if len(set(ids)) > 1),
        same_message_id_redeliveries=sum(len(ids) - len(set(ids)) for ids in mails.values()),
        backward_moves=backward,
        orders_with_backward_moves=orders_backward,
        off_path_moves=off_path,
        dead_letters=evidence.dead_letters,
        dead_letter_groups=[
            {k: g.get(k) for k in ("step", "cause", "error_class", "count")}
            for g in evidence.dead_letter_groups
        ],
        dead_lettered_during_run=dict(
            Counter(
                f"{e.get('kind', '?')}: {str(e.get('error', ''))[:120]}"
                for e in evidence.dead_events
            )
        ),
        stock_mismatches=sum(
            1
            for sku in set(evidence.stock_sold) | set(evidence.stock_ordered)
            if evidence.stock_sold.get(sku, 0) != evidence.stock_ordered.get(sku, 0)
        ),
        faults={
            "kills": evidence.kills,
            "carrier_503": evidence.carrier_503_in_outage,
            "carrier_requests_hung": evidence.carrier_requests_hung,
            "carrier_429": by_status.get("429", 0),
            "paydesk_429": evidence.paydesk_by_status.get("429", 0),
            "carrier_ambiguous_504": by_status.get("504", 0),
            "paydesk_ambiguous_timeouts": evidence.paydesk_by_status.get("504", 0),
            "webhooks_duplicated": evidence.webhooks.get("duplicated", 0),
            "webhooks_lost": evidence.webhooks.get("lost", 0),
        },
        unexpected_exits=list(evidence.unexpected_exits),
        outage_seconds=round(evidence.outage_seconds, 1),
        recovery_seconds=None
        if evidence.recovery_seconds is None
        else round(evidence.recovery_seconds, 1),
        told_seconds=None if evidence.told_seconds is None else round(evidence.told_seconds, 1),
        total_seconds=round(evidence.total_seconds, 1),
        backlog_peak=peak,
        backlog_final=dict(evidence.final_backlog),
        breaker_open_seconds={k: round(v, 1) for k, v in sorted(open_seconds.items())},
        resources=resources(evidence.samples),
        backlog_series=[
            {"at": round(p.at, 1), "backlog": dict(p.backlog), "states": dict(p.states)}
            for p in evidence.backlog
        ],
        drain=drain(
            evidence.carrier_requests,
            evidence.carrier_back_at,
            configured_rate(evidence.scenario.get("knobs", {})),
            evidence.scenario.get("carrier_rate_limit"),
        ),
    )


# --- verdicts -----------------------------------------------------------------------------------
def redelivery_bound(orders: int) -> int:
    """How many e-mails a kill -9 may repeat: at most 1 per 300 orders (rounded up).

    An e-mail is recorded as sent in its own commit right after the SMTP server accepts it, so
    a kill can repeat only a message in flight at that instant, never a whole batch's."""
    return -(-orders // 300)


def violations(f: Figures) -> list[str]:
    """Every broken promise, one line each; empty when the run kept them all."""
    out = []
    zero = {
        "orders lost": f.lost,
        "orders not shipped": f.unfinished,
        "double charges": f.double_charges,
        "missing charges": f.missing_charges,
        "double bookings": f.double_bookings,
        "missing bookings": f.missing_bookings,
        'double "shipped" e-mails': f.double_shipped_emails,
        'missing "shipped" e-mails': f.missing_shipped_emails,
        "backward status moves": f.backward_moves,
        "moves off the happy path": f.off_path_moves,
        "dead letters": f.dead_letters,
        "tasks dead-lettered during the run (workers' logs)": sum(
            f.dead_lettered_during_run.values()
        ),
        "stock mismatches": f.stock_mismatches,
        "processes that exited by themselves": len(f.unexpected_exits),
    }
    out += [f"{what}: {n}" for what, n in zero.items() if n]
    allowed = redelivery_bound(f.accepted)
    if f.same_message_id_redeliveries > allowed:
        out.append(
            f'"shipped" e-mails sent twice (same Message-ID): '
            f"{f.same_message_id_redeliveries}, more than {allowed} for {f.accepted} orders"
        )
    if f.dead_letters:
        steps = ", ".join(f"{g['count']} {g['step']}" for g in f.dead_letter_groups)
        out[out.index(f"dead letters: {f.dead_letters}")] += f" ({steps})"
    if f.accepted == 0:
        out.append("no order was accepted")
    if f.recovery_seconds is None:
        out.append("never recovered: not every accepted order shipped in time")
    if any(f.backlog_final.values()):
        out.append(f"backlog left at the end: {f.backlog_final}")
    res = f.resources
    if res.get("samples", 0) < 3:
        out.append(f"too few resource samples during the outage: {res.get('samples', 0)}")
        return out
    if not res["judged_processes"]:
        out.append("no process lived through the outage: memory and connections not judged")
    if res["rss_growth_kib"] > RSS_TOLERANCE_KIB:
        out.append(
            f"memory grew during the outage: +{res['rss_growth_kib']} KiB RSS in "
            f"{res['rss_growth_process']} over {res['rss_growth_over_seconds']}s"
        )
    if res["connections_growth"] > CONNECTION_TOLERANCE:
        out.append(
            f"database connections grew during the outage: +{res['connections_growth']} in "
            f"{res['connections_growth_process']}"
        )
    rates = res["log_bytes_per_second_per_process"]
    if rates["late"] > max(LOG_RATE_FLOOR, rates["early"] * (1 + LOG_RATE_TOLERANCE)):
        out.append(
            f"log volume per second grew during the outage: {rates['early']} -> "
            f"{rates['late']} bytes/s per process"
        )
    return out


def unseen_faults(f: Figures) -> list[str]:
    """Faults the scenario meant to inject but that never happened (the run proves less)."""
    wanted = {
        "kill -9": f.faults["kills"] if f.scenario.get("kill_every") else 1,
        "503 from the carrier": f.faults["carrier_503"],
        "hanging carrier requests": f.faults["carrier_requests_hung"],
        "429 from the carrier": f.faults["carrier_429"],
        "ambiguous carrier bookings (504)": f.faults["carrier_ambiguous_504"],
        "ambiguous Paydesk charges (timeout)": f.faults["paydesk_ambiguous_timeouts"],
        "duplicated webhooks": f.faults["webhooks_duplicated"],
        "lost webhooks": f.faults["webhooks_lost"],
    }
    return [name for name, n in wanted.items() if n == 0]


# --- the summary --------------------------------------------------------------------------------
def _n(value: float | None, unit: str = "s") -> str:
    return "never" if value is None else f"{value}{unit}"


def percent(fraction: float | None) -> str:
    return "?" if fraction is None else f"{fraction:.0%}"


def drain_lines(d: Mapping[str, Any]) -> list[str]:
    """The drain in two lines of the summary (nothing if the carrier never came back)."""
    if not d:
        return []
    rate = d["configured_rate"]
    if not d["bookings"]:
        return [f"drain                        no booking after the carrier came back ({rate}/s)"]
    kinds = d["requests_by_kind"]
    return [
        f"drain after the outage       {d['bookings']} bookings in {d['seconds']}s (carrier back "
        f"-> last booking): "
        f"{d['bookings_per_second']}/s = {percent(d['fraction'])} of the configured {rate}/s "
        f"(middle 80 %: {d['steady_bookings_per_second']}/s = "
        f"{percent(d['steady_fraction'])}; first booking after "
        f"{d['first_booking_after_seconds']}s)",
        f"  requests in the drain      {d['requests_per_second']}/s "
        f"({percent(d['requests_fraction'])}): {kinds['bookings']} bookings, "
        f"{kinds['lookups']} look-ups, {kinds['polls']} polls, {kinds['cancels']} cancels, "
        f"{kinds['other']} other; {d['rate_limited_429']} answered 429 "
        f"(carrier allows {d['carrier_rate_limit']}/s)",
    ]


def summary(f: Figures, broken: Sequence[str], unseen: Sequence[str]) -> str:
    """The block `orderflow chaos` prints."""
    s = f.scenario
    faults = f.faults
    res = f.resources
    lines = [
        "=" * 78,
        f"orderflow chaos: {s.get('orders')} orders, {s.get('workers')} worker(s) on "
        f"{s.get('database')}, kill -9 every ~{s.get('kill_every')}s, seed {s.get('seed')}",
        f"Bob's Post down {f.outage_seconds}s: 503 while placing + {s.get('outage_seconds')}s, "
        f"then hanging {s.get('outage_seconds')}s",
        "-" * 78,
        f"orders accepted (202)        {f.accepted}   (rejected: {f.rejected or 'none'}; "
        f"placed in {f.placement_seconds}s)",
        f"orders lost                  {f.lost}   (found {f.found}; not shipped {f.unfinished})",
        f"double charges               {f.double_charges}   (charged {f.charged}, missing "
        f"{f.missing_charges})",
        f"double bookings              {f.double_bookings}   (booked {f.booked}, missing "
        f"{f.missing_bookings})",
        f'double "shipped" e-mails     {f.double_shipped_emails}   (sent {f.shipped_emails}, '
        f"missing {f.missing_shipped_emails}; same-Message-ID redeliveries "
        f"{f.same_message_id_redeliveries}, at most {redelivery_bound(f.accepted)} allowed)",
        f"backward status moves        {f.backward_moves}   (off the happy path "
        f"{f.off_path_moves})",
        f"dead letters                 {f.dead_letters}"
        + "".join(
            f"\n  {g['count']} x {g['step']}: {g['cause']} ({g['error_class']})"
            for g in f.dead_letter_groups
        )
        + (
            f"   (dead-lettered during the run, from the workers' logs: "
            f"{f.dead_lettered_during_run})"
            if f.dead_lettered_during_run
            else ""
        ),
        f"stock mismatches             {f.stock_mismatches}",
        f"statuses at the end          {f.statuses}",
        "-" * 78,
        f"recovery time                {_n(f.recovery_seconds)}   (outage end -> all shipped;"
        f' all "shipped" e-mails in {_n(f.told_seconds)}; run {f.total_seconds}s)',
        f"backlog peak / final         {f.backlog_peak} / {f.backlog_final}",
        f"breaker open                 {f.breaker_open_seconds}",
        *drain_lines(f.drain),
        f"faults injected              kill -9 {faults['kills']}, carrier 503 "
        f"{faults['carrier_503']}, hung {faults['carrier_requests_hung']}, 429 "
        f"{faults['carrier_429']} (+Paydesk {faults['paydesk_429']}), ambiguous "
        f"{faults['carrier_ambiguous_504']} bookings / {faults['paydesk_ambiguous_timeouts']}"
        f" charges, webhooks duplicated {faults['webhooks_duplicated']} / lost "
        f"{faults['webhooks_lost']}",
    ]
    if res.get("samples", 0) >= 3:
        points = res["points"]
        rates = res["log_bytes_per_second_per_process"]
        lines += [
            "-" * 78,
            f"during the outage ({res['samples']} samples)   early / middle / late",
            "  workers' RSS (MiB)         "
            + " / ".join(str(points[p]["workers_rss_mib"]) for p in ("early", "middle", "late")),
            "  DB connections (processes) "
            + " / ".join(str(points[p]["db_connections"]) for p in ("early", "middle", "late"))
            + (
                "   (pg_stat_activity "
                + " / ".join(str(points[p]["pg_backends"]) for p in ("early", "middle", "late"))
                + ")"
                if points["early"]["pg_backends"] is not None
                else ""
            ),
            f"  log bytes/s per process    {rates['early']} / {rates['middle']} / {rates['late']}",
            f"  growth within a process    RSS +{res['rss_growth_kib']} KiB "
            f"({res['rss_growth_process']}, {res['rss_growth_over_seconds']}s), connections "
            f"+{res['connections_growth']}, log rate {res['log_rate_growth']:+} bytes/s",
        ]
    lines.append("-" * 78)
    if unseen:
        lines.append(f"note: never happened: {', '.join(unseen)}")
    lines += [f"VIOLATED: {line}" for line in broken] or ["all promises kept"]
    lines.append("=" * 78)
    return "\n".join(lines)
