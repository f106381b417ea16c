"""A circuit breaker per provider: after repeated faults, answer 'unavailable' for a short while."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bot.domain.errors import ProviderError
from bot.domain.metrics import BreakerState
from bot.domain.tasks import Fault

log = logging.getLogger(__name__)

# Faults that say the provider itself is in trouble; a refused image or a failed task does not.
TRIPPING_FAULTS = frozenset(
    {
        Fault.BUSY,
        Fault.UNREACHABLE,
        Fault.LOST,
        Fault.TIMEOUT,
        Fault.BAD_RESULT,
    }
)


class CircuitBreaker:
    """Closed, then open after `threshold` faults in a row, then half-open after `cooldown` seconds.

    A fault is a task that did not finish because of the provider: a create it refused or never answered,
    a task that timed out or whose result was unusable. Taking a request only closes a half-open circuit;
    the count of faults in a row is reset by a task that finished.
    """

    def __init__(
        self,
        provider: str,
        *,
        threshold: int = 5,
        cooldown: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self._threshold = threshold
        self._cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None and self._clock() - self._opened_at < self._cooldown

    @property
    def state(self) -> BreakerState:
        """Closed, open (refusing), or half-open (the cooldown is over: the next request decides)."""
        if self._opened_at is None:
            return BreakerState.CLOSED
        return BreakerState.OPEN if self.is_open else BreakerState.HALF_OPEN

    def check(self) -> None:
        """Raise UNAVAILABLE while open; after the cooldown let one trial request through."""
        if self._opened_at is None:
            return
        if self._clock() - self._opened_at < self._cooldown or self._trial_running:
            raise ProviderError(self.provider, Fault.UNAVAILABLE)
        self._trial_running = True  # half-open: this request decides

    def record_answer(self) -> None:
        """The provider took a request: a half-open trial passed (its task has yet to finish)."""
        if self._opened_at is not None and self._trial_running:
            log.info("%s answers again; circuit closed", self.provider)
            self._opened_at = None
        self._trial_running = False

    def record_success(self) -> None:
        """A task finished: the provider works; the count of faults in a row starts again."""
        if self._opened_at is not None:
            log.info("%s answers again; circuit closed", self.provider)
        self._failures = 0
        self._opened_at = None
        self._trial_running = False

    def record_failure(self, fault: Fault) -> None:
        if fault not in TRIPPING_FAULTS:
            self._trial_running = False
            return
        self._failures += 1
        if self._trial_running or self._failures >= self._threshold:
            if self._opened_at is None or self._trial_running:
                log.warning(
                    "%s failed %d times in a row; pausing it for %.0f s",
                    self.provider,
                    self._failures,
                    self._cooldown,
                )
            self._opened_at = self._clock()
            self._trial_running = False
