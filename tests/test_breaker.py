"""The circuit breaker: closed, open after repeated faults, half-open after the cooldown, closed again."""

from __future__ import annotations

import pytest

from bot.core.breaker import CircuitBreaker
from bot.domain.errors import ProviderError
from bot.domain.tasks import Fault


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _trip(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.check()
        breaker.record_failure(Fault.BUSY)


def test_opens_after_the_threshold_and_closes_after_a_good_trial() -> None:
    clock = Clock()
    breaker = CircuitBreaker("freepik", threshold=3, cooldown=60, clock=clock)
    _trip(breaker, 2)
    breaker.check()  # two faults in a row: still closed
    breaker.record_failure(Fault.BUSY)
    assert breaker.is_open
    with pytest.raises(ProviderError) as refused:
        breaker.check()
    assert refused.value.fault is Fault.UNAVAILABLE

    clock.now += 61  # cooldown over: one trial request goes through, others wait for its outcome
    breaker.check()
    with pytest.raises(ProviderError):
        breaker.check()
    breaker.record_success()
    assert not breaker.is_open
    breaker.check()


def test_a_failed_trial_opens_it_again_at_once() -> None:
    clock = Clock()
    breaker = CircuitBreaker("freepik", threshold=3, cooldown=60, clock=clock)
    _trip(breaker, 3)
    clock.now += 61
    breaker.check()
    breaker.record_failure(Fault.TIMEOUT)
    assert breaker.is_open
    with pytest.raises(ProviderError):
        breaker.check()


def test_faults_of_the_members_input_do_not_count() -> None:
    breaker = CircuitBreaker("freepik", threshold=2, cooldown=60, clock=Clock())
    for _ in range(5):
        breaker.check()
        breaker.record_failure(Fault.REJECTED)
        breaker.record_failure(Fault.FAILED)
    assert not breaker.is_open


def test_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker("freepik", threshold=3, cooldown=60, clock=Clock())
    _trip(breaker, 2)
    breaker.record_success()
    _trip(breaker, 2)
    assert not breaker.is_open
