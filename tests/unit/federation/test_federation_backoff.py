"""Backoff for broker reconnects and publish retries: exponential, jittered, capped."""

from __future__ import annotations

import random

import pytest

from yggdrasil.federation.backoff import Backoff

pytestmark = pytest.mark.unit


def test_delays_double_up_to_the_cap_each_drawn_from_the_upper_half():
    backoff = Backoff(1.0, 30.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [1, 2, 4, 8, 16, 30, 30, 30]
    assert all(ceiling / 2 <= delay <= ceiling for delay, ceiling in zip(delays, ceilings, strict=True))


def test_two_sidecars_that_lost_the_same_broker_do_not_retry_in_lockstep():
    first, second = Backoff(1.0, 30.0, rng=random.Random(1)), Backoff(1.0, 30.0, rng=random.Random(2))
    assert [first.next_delay() for _ in range(5)] != [second.next_delay() for _ in range(5)]


def test_a_success_starts_again_from_the_initial_delay():
    backoff = Backoff(1.0, 30.0)
    for _ in range(10):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def test_a_backoff_without_a_positive_start_below_its_cap_is_refused():
    with pytest.raises(ValueError):
        Backoff(0, 30.0)
    with pytest.raises(ValueError):
        Backoff(60.0, 30.0)
