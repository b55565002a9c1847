"""Backoff: exponential, capped, jittered, and never sooner than Retry-After asks."""

from __future__ import annotations

from orderflow.tasks.retry import RetryPolicy

POLICY = RetryPolicy(base_seconds=1.0, max_seconds=60.0, jitter=0.5)


def test_backoff_doubles_until_the_cap() -> None:
    """With no jitter drawn, waits are 1, 2, 4, … and stop growing at the cap."""
    waits = [POLICY.delay(n, rand=lambda: 0.0) for n in range(1, 10)]
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_jitter_stays_within_its_band() -> None:
    """Jitter only shortens, by at most `jitter` of the backoff."""
    assert POLICY.delay(3, rand=lambda: 1.0) == 2.0
    assert POLICY.delay(3, rand=lambda: 0.5) == 3.0
    for attempt in range(1, 30):
        assert 0.5 * min(60, 2 ** (attempt - 1)) <= POLICY.delay(attempt) <= 60


def test_retry_after_is_honoured_but_capped() -> None:
    """The server's Retry-After wins over a shorter backoff, up to our own cap."""
    assert POLICY.delay(1, retry_after=7.0, rand=lambda: 0.0) == 7.0
    assert POLICY.delay(8, retry_after=7.0, rand=lambda: 0.0) == 60.0
    assert POLICY.delay(1, retry_after=10_000.0, rand=lambda: 0.0) == 60.0


def test_a_very_long_outage_does_not_overflow() -> None:
    """Attempt 10,000 still yields the cap, not an overflow."""
    assert POLICY.delay(10_000, rand=lambda: 0.0) == 60.0


def test_pacing_halves_on_429_and_recovers_a_tenth_per_second() -> None:
    """AIMD: a batch refused whole halves the shared pace (down to a floor), one 429 among
    many slows it in proportion; it climbs back 10 %/s."""
    from datetime import UTC, datetime, timedelta

    from orderflow.dependencies.policy import MIN_RATE_FACTOR, recovered, slowed

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert slowed(1.0) == 0.5
    assert slowed(MIN_RATE_FACTOR) == MIN_RATE_FACTOR
    assert slowed(1.0, share=1 / 40) == 0.975
    assert slowed(0.8, share=0.9) == 0.4
    assert recovered(0.5, t0, t0 + timedelta(seconds=0.5)) == 0.5
    assert recovered(0.5, t0, t0 + timedelta(seconds=3)) == 0.8
    assert recovered(0.5, t0, t0 + timedelta(seconds=60)) == 1.0


def test_allowance_is_one_second_of_the_pace_and_respects_a_block() -> None:
    """At 10/s, ten may start now; after a 429 with Retry-After 2, none until 2 s later."""
    from datetime import UTC, datetime, timedelta

    from orderflow.dependencies.policy import DependencyPolicy, allowance, blocked_until

    policy = DependencyPolicy(
        "bobs_post", failure_threshold=5, probe_seconds=30, rate_per_second=10
    )
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert allowance(policy, None, t0) == 10
    assert allowance(policy, None, t0, factor=0.5) == 5
    blocked = blocked_until(t0, 2.0)
    assert allowance(policy, blocked, t0 + timedelta(seconds=1.9)) == 0
    assert allowance(policy, blocked, t0 + timedelta(seconds=2.5)) == 5
