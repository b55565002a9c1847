"""Build the outside-world adapters and the step handlers from Settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from orderflow.alerts.rules import Thresholds, evaluate
from orderflow.alerts.slack import SlackClient
from orderflow.alerts.steps import EmailAlertStep, SlackAlertStep
from orderflow.audit import signing
from orderflow.audit.anchors import anchor_if_due
from orderflow.backpressure import Gauge
from orderflow.config import Settings
from orderflow.db import Database
from orderflow.deadletters.auto import auto_redrive
from orderflow.deadletters.steps import RedriveStep
from orderflow.dependencies import health
from orderflow.dependencies.policy import DependencyPolicy
from orderflow.intake.step import IntakeStep
from orderflow.notifications.mailer import Mailer
from orderflow.notifications.steps import NotifyStep
from orderflow.observability.overview import sample_backlog
from orderflow.payments.paydesk import PaydeskClient
from orderflow.payments.steps import ChargeStep, RefundStep
from orderflow.relay import Relay
from orderflow.shipping.bobs_post import BobsPostClient
from orderflow.shipping.steps import BookStep, CancelShipmentStep, TrackStep
from orderflow.tasks.periodic import Periodic
from orderflow.tasks.retry import RetryPolicy
from orderflow.tasks.step import Step
from orderflow.tasks.worker import Worker


class MissingSetting(Exception):
    pass


def _required(value: str | None, name: str) -> str:
    if not value:
        raise MissingSetting(f"{name} is not set: the worker needs it to reach the outside world")
    return value


@dataclass
class Adapters:
    paydesk: PaydeskClient
    carrier: BobsPostClient
    mailer: Mailer
    slack: SlackClient | None

    def close(self) -> None:
        self.paydesk.close()
        self.carrier.close()
        self.mailer.close()
        if self.slack is not None:
            self.slack.close()


def build_adapters(settings: Settings) -> Adapters:
    timeout = settings.http_timeout_seconds
    return Adapters(
        paydesk=PaydeskClient(
            _required(settings.paydesk_url, "ORDERFLOW_PAYDESK_URL"),
            settings.paydesk_api_key,
            timeout,
        ),
        carrier=BobsPostClient(
            _required(settings.bobs_post_url, "ORDERFLOW_BOBS_POST_URL"),
            settings.bobs_post_api_key,
            timeout,
        ),
        mailer=Mailer(_required(settings.smtp_url, "ORDERFLOW_SMTP_URL"), timeout),
        slack=SlackClient(settings.slack_webhook_url, timeout)
        if settings.slack_webhook_url
        else None,
    )


def build_steps(settings: Settings, adapters: Adapters, db: Database) -> dict[str, Step]:
    poll = settings.tracking_poll_seconds
    steps: list[Step] = [
        ChargeStep(adapters.paydesk),
        RefundStep(adapters.paydesk),
        BookStep(adapters.carrier, poll),
        TrackStep(
            adapters.carrier,
            poll,
            settings.collection_deadline_seconds,
            settings.delivery_deadline_seconds,
        ),
        CancelShipmentStep(adapters.carrier),
        NotifyStep(adapters.mailer, settings.mail_from),
        RedriveStep(),
        IntakeStep(),  # redriven intake dead letters
        SlackAlertStep(adapters.slack),
        EmailAlertStep(adapters.mailer, settings.mail_from, settings.logistics_email),
        *periodic_jobs(settings, db),
    ]
    return {step.kind: step for step in steps}


def periodic_jobs(settings: Settings, db: Database) -> list[Periodic]:
    """Cluster-wide periodic jobs: alert check, audit anchoring, outbox relay, auto-redrive."""
    thresholds = alert_thresholds(settings)
    try:  # read once, at start: a missing or unreadable key stops the worker with one line
        signer = signing.signer_for(settings.audit_anchor_key_file)
    except signing.AnchorKeyError as exc:
        raise MissingSetting(f"ORDERFLOW_AUDIT_ANCHOR_KEY_FILE: {exc}") from None
    jobs = [
        Periodic(
            "alert_check",
            settings.alert_check_seconds,
            in_transaction=lambda session: evaluate(session, thresholds),
        ),
        Periodic(
            "backlog_sample",
            settings.backlog_sample_seconds,
            in_transaction=sample_backlog,
        ),
        Periodic(
            "audit_anchor",
            settings.audit_anchor_seconds,
            outside=lambda: anchor_if_due(
                db, settings.audit_anchor_dir, settings.audit_anchor_seconds, signer
            ),
        ),
    ]
    relay = Relay(db, settings.broker_url, keep_days=settings.outbox_retention_days)
    jobs.append(Periodic("outbox_relay", settings.outbox_relay_seconds, outside=relay.run))
    if settings.auto_redrive:
        jobs.append(
            Periodic(
                "auto_redrive",
                settings.auto_redrive_seconds,
                in_transaction=lambda session: auto_redrive(
                    session,
                    per_run=settings.auto_redrive_per_run,
                    max_times=settings.auto_redrive_max_times,
                    healthy_for=timedelta(seconds=settings.auto_redrive_healthy_seconds),
                ),
            )
        )
    return jobs


def alert_thresholds(settings: Settings) -> Thresholds:
    return Thresholds(
        dependency_down=timedelta(seconds=settings.alert_dependency_down_seconds),
        backlog_age=timedelta(seconds=settings.alert_backlog_age_seconds),
        delivery_delay=timedelta(seconds=settings.alert_delivery_delay_seconds),
        repeat_every=timedelta(seconds=settings.alert_repeat_seconds),
    )


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(settings.retry_base_seconds, settings.retry_max_seconds)


def dependency_policies(settings: Settings) -> dict[str, DependencyPolicy]:
    def policy(name: str, rate: float | None) -> DependencyPolicy:
        return DependencyPolicy(
            name=name,
            failure_threshold=settings.breaker_failure_threshold,
            probe_seconds=settings.breaker_probe_seconds,
            rate_per_second=rate,
        )

    return {
        "paydesk": policy("paydesk", settings.paydesk_rate_limit),
        "bobs_post": policy("bobs_post", settings.bobs_post_rate_limit),
        "smtp": policy("smtp", None),
        "slack": policy("slack", None),
    }


def build_worker(
    settings: Settings, db: Database, adapters: Adapters, name: str | None = None
) -> Worker:
    policies = dependency_policies(settings)
    steps = build_steps(settings, adapters, db)
    with db.transaction() as session:
        health.ensure(session, list(policies))
        for step in steps.values():
            if isinstance(step, Periodic):
                step.schedule(session)
    return Worker(
        db,
        steps,
        retry=retry_policy(settings),
        lease_seconds=settings.lease_seconds,
        batch_size=settings.worker_batch_size,
        concurrency=settings.worker_concurrency,
        idle_seconds=settings.worker_idle_seconds,
        name=name,
        dependencies=policies,
        max_attempts=settings.max_attempts,
        pressure=pressure_gauge(settings, db),
        strict_lanes_seconds=settings.worker_strict_lanes_seconds,
    )


def pressure_gauge(settings: Settings, db: Database) -> Gauge:
    return Gauge(db, settings.backpressure_warning_seconds, settings.backpressure_shedding_seconds)
