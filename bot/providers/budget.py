"""A provider's request budget: its documented rate limits kept at any load, the likeliest requests first.

Every request to the provider (creates, polls, key checks, and each retry) takes a slot first. A limit is
"at most N requests in any window of S seconds", and the provider counts a request when it arrives, which
is somewhere between the moment the bot lets it go and the moment its answer is back. So a request holds
its place in every window from the moment it is let go until S seconds after its answer came: whatever the
latency, no window the provider can draw holds more than N of them, and there is no margin to guess.

When no slot is free, requests wait in line: creates first (a member is waiting for the task to exist),
then polls, the likeliest to find their task ended first. A poll's place is the moment it asked, moved
forward by `AGING` seconds for a certain find (its `chance`, 0 to 1), so a likely poll passes unlikely
ones that asked up to that long before it, and no poll waits for ever behind newer ones. A poll that waits
only looks later, and the runner schedules the next one from when it was answered, so a busy budget makes
each task cost fewer polls rather than a longer line. A 429 (the address is shared, or the provider counts
differently) holds every request back for its Retry-After, or a second.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

# A certain poll goes ahead of polls that asked up to this many seconds before it.
AGING = 10.0
# Without a Retry-After, a 429 holds every request back this long.
HOLD_AFTER_429 = 1.0


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `requests` in any window of `seconds`."""

    requests: int
    seconds: float

    @classmethod
    def per_second(cls, rate: float, seconds: float) -> RateLimit:
        """Return the limit of `rate` requests per second averaged over `seconds`."""
        return cls(max(1, math.floor(rate * seconds + 1e-9)), seconds)


class RequestBudget:
    """Slots for one provider's requests under its rate limits; see the module's docstring."""

    def __init__(self, limits: Sequence[RateLimit], *, clock: Callable[[], float] = time.monotonic) -> None:
        if not limits:
            raise ValueError("a budget needs at least one limit")
        self.limits = tuple(sorted(limits, key=lambda limit: limit.seconds))
        self._longest = self.limits[-1].seconds
        self._clock = clock
        self._in_flight = 0
        self._answered: list[float] = []  # when each answer came, in order, within the longest window
        self._start = 0  # answers before this index have left every window
        self._waiting: list[tuple[int, float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._held_until = -math.inf
        self.waited = 0  # requests that had to wait for a slot (for the logs and the benchmark)

    @asynccontextmanager
    async def slot(self, *, chance: float | None = None) -> AsyncIterator[None]:
        """Hold a slot while one request is sent and answered.

        `chance` is a poll's chance of finding its task ended; None goes first (creates, key checks).
        """
        await self._take(chance)
        try:
            yield
        finally:
            self._give_back()

    def hold(self, seconds: float | None) -> None:
        """Let no request go for `seconds` (a 429's Retry-After; a second when it gave none)."""
        now = self._clock()
        self._held_until = max(self._held_until, now + (HOLD_AFTER_429 if seconds is None else seconds))
        self._reschedule(now)

    def used(self, seconds: float) -> int:
        """Return how many requests hold a place in a window of `seconds` ending now."""
        return self._in_flight + self._answered_since(self._clock() - seconds)

    async def _take(self, chance: float | None) -> None:
        now = self._clock()
        if not self._waiting and self._free(now):
            self._in_flight += 1
            return
        self.waited += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        place = now if chance is None else now - AGING * min(max(chance, 0.0), 1.0)
        heapq.heappush(self._waiting, (0 if chance is None else 1, place, next(self._order), future))
        self._let_go()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._give_back()  # let go just as its request was given up: the place is spent
            raise

    def _give_back(self) -> None:
        now = self._clock()
        self._in_flight -= 1
        self._answered.append(now)
        self._forget_before(now - self._longest)
        self._reschedule(now)

    def _free(self, now: float) -> bool:
        if now < self._held_until:
            return False
        return all(
            self._in_flight + self._answered_since(now - limit.seconds) < limit.requests
            for limit in self.limits
        )

    def _answered_since(self, since: float) -> int:
        return len(self._answered) - bisect.bisect_right(self._answered, since, lo=self._start)

    def _let_go(self) -> None:
        """Give free slots to the first in line, then wait for the next slot to come free."""
        self._timer = None
        now = self._clock()
        self._forget_before(now - self._longest)
        while self._waiting and self._free(now):
            future = heapq.heappop(self._waiting)[-1]
            if future.done():  # given up while waiting
                continue
            self._in_flight += 1
            future.set_result(None)
        self._reschedule(now)

    def _reschedule(self, now: float) -> None:
        if not self._waiting or self._timer is not None:
            return
        at = self._next_free(now)
        if at is not None:
            self._timer = asyncio.get_running_loop().call_later(max(0.0, at - now), self._let_go)

    def _next_free(self, now: float) -> float | None:
        """Return when a slot comes free if nothing else changes; None: only when an answer comes."""
        at = self._held_until
        for limit in self.limits:
            room = limit.requests - self._in_flight
            if room <= 0:
                return None
            since = now - limit.seconds
            first = bisect.bisect_right(self._answered, since, lo=self._start)
            over = len(self._answered) - first - room  # answers that must leave this window first
            if over >= 0:
                at = max(at, self._answered[first + over] + limit.seconds)
        return at

    def _forget_before(self, cutoff: float) -> None:
        self._start = bisect.bisect_right(self._answered, cutoff, lo=self._start)
        if self._start > 1024 and self._start * 2 > len(self._answered):
            del self._answered[: self._start]
            self._start = 0
