"""GET /metrics: Prometheus text with the database's gauges and this process's counters."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from orderflow.shipping.signature import HEADER
from tests.support.stack import Stack


def _samples(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{stack.server.url}/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_show_orders_work_dead_letters_dependencies_and_webhooks(stack: Stack) -> None:
    """A delivered order, a dead booking and a forged webhook all show up in /metrics."""
    stack.product("WIDGET", stock=10)
    good = stack.place(stack.customer(), [("WIDGET", 1)])
    bad = stack.place(stack.customer(country="XX"), [("WIDGET", 1)])
    stack.work_until_status(good["id"], "delivered")
    stack.work_until(lambda: stack.api.get("/dead-letters").json()["total"] == 1)
    forged = httpx.post(
        f"{stack.server.url}/webhooks/bobs-post",
        content=b"{}",
        headers={HEADER: f"t={int(time.time())},v1=00"},
    )
    assert forged.status_code == 401
    time.sleep(5.1)  # the database gauges are cached for 5 s

    samples = _samples(stack)
    assert samples[("orderflow_orders", (("status", "delivered"),))] == 1
    assert samples[("orderflow_orders", (("status", "paid"),))] == 1
    assert (
        samples[("orderflow_dead_letters", (("error_class", "permanent"), ("step", "book")))] == 1
    )
    assert samples[("orderflow_dependency_up", (("dependency", "bobs_post"),))] == 1
    assert samples[("orderflow_webhooks_total", (("outcome", "rejected"),))] >= 1
    assert samples[("orderflow_webhooks_total", (("outcome", "applied"),))] >= 1
    assert samples[("orderflow_emails_recorded", (("kind", "shipped"),))] == 1
    steps = [k for k in samples if k[0] == "orderflow_step_duration_seconds_count"]
    assert any(dict(labels)["step"] == "charge" for _, labels in steps)
    assert bad["id"] != good["id"]
