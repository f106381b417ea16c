"""Learned polling: when to look at a provider's task again, learned from how long its tasks took.

Why this shape. A poll costs the admin a request (every Freepik call spends credits) and tells the bot one
thing: whether the task has ended. A fixed poller every I seconds finds an end I/2 late on average wherever
it falls; growing waits (2 s, x1.5, up to 10 s) spend fewer polls but find the end later still, because most
tasks end where the waits have grown long. The tasks of one provider and kind take similar times, so the
bot learns their distribution from its own finished tasks and spends its looks where ends are likely.

What is learned. Each finished task gives an interval: it was still running `ran_for` seconds after the
create answer and had ended `ended_within` seconds after it (a webhook delivery gives the moment itself).
Each task still running gives a lower bound (it has run at least this long): leaving those out would
read the quick ends of a burst as the whole story. The distribution function F of the end's age is the
nonparametric maximum-likelihood estimate for such data (Turnbull's self-consistency, a few dozen EM
rounds over the cells between the observed ages), spread evenly inside each cell, so F is piecewise
linear: the sample read as it is, no shape (log-normal, uniform, ...) assumed. Only the newest `window`
tasks (by start) of a provider and kind count, so a provider that slows down or speeds up is followed;
they are kept in the database (`TaskDurations`), so a restart starts from what was learned.

The schedule. After a look at age a found the task running, the next look comes after a gap Δ. Over a
stretch where the chance of ending per second (the hazard h) is about constant, gaps of Δ cost, per second,
one poll per Δ (priced at λ seconds of delay) plus h·Δ/2 seconds of delay: the sum is least when h·Δ² = 2λ,
the square-root law of inspection intervals. With q = P(end within the gap | running at a) ≈ h·Δ, the rule
is q·Δ = 2λ: each gap is as long as makes its chance of holding the end, times its length, twice the price
of a poll. Looks crowd where ends are frequent, thin out in the tail, and none is spent where no task
ended. It is solved exactly on the piecewise-linear F (a quadratic per segment), not with the small-gap
approximation. λ is set per distribution so that a task costs on average `saving` x the polls a fixed
poller every POLL_INTERVAL_SECONDS would spend on the same distribution: fewer requests, seen sooner.

Dither. Each learned gap is stretched or shrunk at random by up to `dither` (20 %). Without it a schedule
confirms itself: every task is looked at on the same ages, so the ends it sees are the same intervals, and
nothing it learns can say where inside them the ends lie (the estimate may even empty a stretch it never
looks into). Varied looks give overlapping intervals that do, and a burst's polls spread out in time,
which the provider's rate limits like.

Bounds and the prior. No gap is longer than POLL_MAX_INTERVAL_SECONDS nor shorter than `min_wait`. Until
`min_samples` ends of a provider and kind are known, and for a task that outlives every end in the window,
the waits are the prior: the first after POLL_INTERVAL_SECONDS, each next one x1.5, up to the ceiling,
which is what the provider's own advice amounts to (Freepik: a first poll after 2-3 s, then every 3-5 s).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.domain.ports import TaskDurations
from bot.domain.tasks import TaskDuration, TaskKind

log = logging.getLogger(__name__)

# Ages are kept to this grain (low ends down, high ends up): it only widens what is known, and it lets the
# many tasks of a burst, seen at nearly the same ages, count as one observation with a weight.
_GRAIN = 0.05
_NEGLIGIBLE = 1e-9
# Rounds of the self-consistency iteration: enough to move the weight that wide intervals smear.
_ROUNDS = 20
# The price of a poll is searched for between these (seconds of delay), on a log scale.
_PRICE_RANGE = (1e-3, 1e3)
_PRICE_STEPS = 20
# A walk of the schedule stops after this many looks whatever happens (min_wait bounds it anyway).
_MAX_LOOKS = 10_000

Key = tuple[str, TaskKind]


@dataclass(frozen=True, slots=True)
class PollingConfig:
    """How polling learns and where it stops; the two waits are the admin's settings."""

    first_wait: float  # POLL_INTERVAL_SECONDS: the prior's first wait, and the poller the saving is against
    max_wait: float  # POLL_MAX_INTERVAL_SECONDS: no wait between two looks is longer
    growth: float = 1.5  # the prior's waits grow so
    min_wait: float = 0.25  # no two looks closer than this (capped by max_wait)
    saving: float = 0.75  # polls per task, against a fixed poller every first_wait seconds
    dither: float = 0.2  # each learned gap is stretched or shrunk at random by up to this share
    min_samples: int = 8  # ends of a provider and kind before the learned schedule replaces the prior
    window: int = 256  # the newest tasks (by start) that count
    save_batch: int = 16  # ends kept in memory before they are written (all are written when idle)

    @property
    def shortest(self) -> float:
        return min(self.min_wait, self.max_wait)


class EndDistribution:
    """When tasks end, as a distribution function of the age (seconds after the create answer).

    F is piecewise linear up to the slowest end seen; what lies beyond (the share of tasks that ran longer
    than any end seen, known from tasks still running) has no shape, and F stays flat there. `last` is
    where the schedule stops trusting F (see below).
    """

    def __init__(self, ended: Sequence[TaskDuration], running: Sequence[float] = ()) -> None:
        if not ended:
            raise ValueError("no ends to learn from")
        observed: Counter[tuple[float, float]] = Counter(_interval(end) for end in ended)
        observed.update((_down(age), math.inf) for age in running)
        ages = sorted({age for interval in observed for age in interval if age != math.inf})
        index = {age: i for i, age in enumerate(ages)}
        index[math.inf] = len(ages)  # the cell past the last age: "ran longer than any end seen"
        cells = len(ages)  # cells[i] lies between ages[i] and ages[i + 1]; the last one is open-ended
        spans = [(index[low], index[high], weight) for (low, high), weight in observed.items()]
        total = sum(observed.values())
        # Start from each end's weight spread evenly over its interval (a lower bound's all past the last
        # age), then let the observations agree on where inside their intervals the weight lies: a cell
        # that many of them share gets the weight that wide intervals would smear around it.
        mass = [0.0] * cells
        for first, stop, weight in spans:
            if stop == cells:
                mass[cells - 1] += weight
                continue
            share = weight / (ages[stop] - ages[first])
            for cell in range(first, stop):
                mass[cell] += share * (ages[cell + 1] - ages[cell])
        mass = [m / total for m in mass]
        for _ in range(_ROUNDS):
            mass = _one_round(mass, spans, total)
        values = [0.0]
        for m in mass[:-1]:
            values.append(min(1.0, values[-1] + m))
        self._ages = ages
        self._values = values
        # The far tail rests on a few ends: looking often there because one task once ended at 58 s would
        # cost every task that runs so long many polls. The schedule follows what at least a 32nd of the
        # ends (and one) lie beyond; past that, the prior's growing waits take over.
        highs = sorted(high for low, high in observed.elements() if high != math.inf)
        self.last = highs[-1 - len(highs) // 32]

    def cdf(self, age: float) -> float:
        """Return the share of tasks ended by this age."""
        ages = self._ages
        i = bisect.bisect_right(ages, age)
        if i == 0:
            return 0.0
        if i == len(ages):
            return self._values[-1]
        a0, a1 = ages[i - 1], ages[i]
        f0, f1 = self._values[i - 1], self._values[i]
        return f0 + (f1 - f0) * (age - a0) / (a1 - a0)

    def gap(self, seen: float, target: float, shortest: float, longest: float) -> float:
        """Return the smallest gap d in [shortest, longest] with (F(seen + d) - F(seen)) * d >= target."""
        base = self.cdf(seen)

        def worth(d: float) -> float:
            return (self.cdf(seen + d) - base) * d

        if worth(shortest) >= target:
            return shortest
        if worth(longest) < target:
            return longest
        # Walk the knots to the segment where the product crosses the target; F is linear inside it.
        ages, values = self._ages, self._values
        i = bisect.bisect_right(ages, seen + shortest)
        left = shortest
        while i < len(ages) and ages[i] < seen + longest:
            d = ages[i] - seen
            if (values[i] - base) * d >= target:
                break
            left = d
            i += 1
        right = ages[i] - seen if i < len(ages) and ages[i] < seen + longest else longest
        f_left = self.cdf(seen + left)
        slope = (self.cdf(seen + right) - f_left) / (right - left)
        # (f_left - base + slope * (d - left)) * d = target, i.e. slope*d² + lead*d - target = 0.
        lead = f_left - base - slope * left
        if slope <= 0:
            d = target / lead
        else:
            d = (-lead + math.sqrt(lead * lead + 4 * slope * target)) / (2 * slope)
        return min(max(d, left), right)

    def fixed_polls(self, interval: float) -> float:
        """Return the polls a task that ends within `last` costs on average, polled every `interval` s."""
        total = 0.0
        k = 0
        while k * interval < self.last and k < _MAX_LOOKS:
            total += self.cdf(self.last) - self.cdf(k * interval)
            k += 1
        return total / max(self.cdf(self.last), _NEGLIGIBLE)


def _one_round(mass: list[float], spans: list[tuple[int, int, int]], total: int) -> list[float]:
    """Give each observation's weight to the cells it covers, in proportion to their mass (one EM round)."""
    before = [0.0]
    for m in mass:
        before.append(before[-1] + m)
    covering = [0.0] * (len(mass) + 1)
    for first, stop, weight in spans:
        held = before[stop] - before[first]
        if held > 0:
            covering[first] += weight / held
            covering[stop] -= weight / held
    running = 0.0
    updated = []
    for cell, m in enumerate(mass):
        running += covering[cell]
        updated.append(m * running / total)
    return updated


def _down(age: float) -> float:
    return math.floor(max(0.0, age) / _GRAIN) * _GRAIN


def _interval(end: TaskDuration) -> tuple[float, float]:
    high = math.ceil(max(0.0, end.ended_within) / _GRAIN) * _GRAIN
    low = min(_down(end.ran_for), high - _GRAIN)
    return max(0.0, low), max(high, _GRAIN)


@dataclass(frozen=True, slots=True)
class Look:
    """When to look at a task next: its age then, and the chance that look finds the end."""

    age: float
    chance: float


class Schedule:
    """When to look again at a task of one provider and kind, at one state of learning."""

    def __init__(self, config: PollingConfig, ends: EndDistribution | None = None) -> None:
        self._config = config
        self.ends = ends
        self.price = 0.0
        if ends is not None:
            self.price = self._price_for(ends)

    @property
    def learned(self) -> bool:
        return self.ends is not None

    def next_look(self, seen: float) -> Look | None:
        """Return the next look after one at age `seen` found the task running; None: wait as the prior."""
        ends = self.ends
        if ends is None or seen >= ends.last:
            return None  # nothing learned, or older than every end seen: nothing says when
        alive = 1.0 - ends.cdf(seen)
        if alive <= _NEGLIGIBLE:
            return None
        config = self._config
        d = ends.gap(seen, 2 * self.price * alive, config.shortest, config.max_wait)
        chance = (ends.cdf(seen + d) - (1.0 - alive)) / alive
        return Look(seen + d, chance)

    def _price_for(self, ends: EndDistribution) -> float:
        """Find the price of a poll that makes a task cost `saving` x the fixed poller's polls."""
        target = self._config.saving * ends.fixed_polls(self._config.first_wait)
        low, high = (math.log(p) for p in _PRICE_RANGE)
        if self._polls_at(ends, math.exp(high)) >= target:
            return math.exp(high)  # even the longest waits spend more: spend the least there is
        for _ in range(_PRICE_STEPS):
            middle = (low + high) / 2
            if self._polls_at(ends, math.exp(middle)) > target:
                low = middle
            else:
                high = middle
        return math.exp(high)

    def _polls_at(self, ends: EndDistribution, price: float) -> float:
        """Return the polls a task that ends within `last` costs on average, looks following the rule."""
        config = self._config
        ended = max(ends.cdf(ends.last), _NEGLIGIBLE)
        seen = 0.0
        total = 0.0
        for _ in range(_MAX_LOOKS):
            if seen >= ends.last:
                break
            alive = 1.0 - ends.cdf(seen)
            total += ended - ends.cdf(seen)  # the next look is made by every such task still running
            seen += ends.gap(seen, 2 * price * alive, config.shortest, config.max_wait)
        return total / ended


@dataclass(slots=True)
class _Learned:
    ends: list[TaskDuration]  # by start, the newest `window`
    schedule: Schedule
    live: set[TaskWatch] = field(default_factory=set)  # tasks of this provider and kind being polled
    new: int = 0  # ends learned since the schedule was made


class PollPlanner:
    """The learned schedules of every provider and kind, loaded from storage once and kept up to date."""

    def __init__(
        self, store: TaskDurations, config: PollingConfig, *, rng: random.Random | None = None
    ) -> None:
        self._store = store
        self.config = config
        self.random = rng or random.Random()  # noqa: S311 (dither, not secrecy)
        self._learned: dict[Key, _Learned] = {}
        self._locks: dict[Key, asyncio.Lock] = {}
        self._unsaved: dict[Key, list[TaskDuration]] = {}

    async def watch(self, provider: str, kind: TaskKind, *, started_at: float, learn: bool) -> TaskWatch:
        """Return the polling of one task whose create answer came at `started_at` (the runner's clock).

        Close it when the task is no longer polled (`TaskWatch.close`, or its end).
        """
        key = (provider, kind)
        await self._load(key)
        watch = TaskWatch(self, key, started_at, learn=learn)
        self._learned[key].live.add(watch)
        return watch

    async def schedule_for(self, provider: str, kind: TaskKind) -> Schedule:
        """Return the schedule tasks of this provider and kind follow now."""
        await self._load((provider, kind))
        return self.schedule((provider, kind))

    def schedule(self, key: Key) -> Schedule:
        learned = self._learned[key]
        count = len(learned.ends)
        if count >= self.config.min_samples and (
            not learned.schedule.learned or learned.new >= max(1, count // 10)
        ):
            running = [watch.seen for watch in learned.live if watch.learn]
            learned.schedule = Schedule(self.config, EndDistribution(learned.ends, running))
            learned.new = 0
        return learned.schedule

    def learn(self, key: Key, end: TaskDuration) -> None:
        """Take one more end into account (the schedule follows within a tenth of the window)."""
        learned = self._learned[key]
        bisect.insort(learned.ends, end, key=lambda e: e.started_at)
        del learned.ends[: -self.config.window]
        learned.new += 1
        self._unsaved.setdefault(key, []).append(end)

    def forget(self, watch: TaskWatch) -> None:
        self._learned[watch.key].live.discard(watch)

    async def save(self, *, everything: bool = False) -> None:
        """Write the ends learned since the last save: a batch at a time, or `everything` (idle, shutdown)."""
        for key in list(self._unsaved):
            pending = self._unsaved[key]
            if not pending or (len(pending) < self.config.save_batch and not everything):
                continue
            self._unsaved[key] = []
            try:
                await self._store.record(key[0], key[1], pending, keep=self.config.window)
            except Exception:  # learning is worth keeping, never worth failing a job over
                log.warning("could not keep %d task durations of %s", len(pending), key[0], exc_info=True)

    async def _load(self, key: Key) -> None:
        if key in self._learned:
            return
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self._learned:
                return
            try:
                ends = await self._store.recent(key[0], key[1], self.config.window)
            except Exception:  # start from the prior rather than not poll at all
                log.warning("could not read the task durations of %s", key[0], exc_info=True)
                ends = []
            ends.sort(key=lambda end: end.started_at)
            self._learned[key] = _Learned(ends, Schedule(self.config), new=len(ends))


@dataclass(eq=False, slots=True)
class TaskWatch:
    """One task's polling: where it was last seen running, when to look next, and what its end teaches."""

    planner: PollPlanner
    key: Key
    started_at: float
    learn: bool
    seen: float = 0.0  # the age at which it was last seen running (the create answer said so at 0)
    _prior_wait: float | None = None
    _failures: int = 0
    _not_before: float = 0.0

    def next_look(self, now: float) -> tuple[float, float]:
        """Return (seconds from `now` until the next look, the chance it finds the end)."""
        config = self.planner.config
        look = self.planner.schedule(self.key).next_look(self.seen)
        if look is not None and config.dither:
            stretch = 1 + self.planner.random.uniform(-config.dither, config.dither)
            look = Look(self.seen + (look.age - self.seen) * stretch, look.chance)
        if look is None:
            # The prior: growing waits from the last look, as the bot always polled.
            wait = config.first_wait if self._prior_wait is None else self._prior_wait * config.growth
            self._prior_wait = min(wait, config.max_wait)
            look = Look(self.seen + self._prior_wait, 0.0)
        at = max(self.started_at + look.age, self._not_before)
        return max(0.0, at - now), look.chance

    def running(self, now: float) -> None:
        """Note a look that found the task still running."""
        self.seen = max(self.seen, now - self.started_at)
        self._failures = 0

    def failed(self, now: float, retry_after: float | None) -> None:
        """Note a look that failed (busy, unreachable): back off as the prior's waits grow, or as told."""
        config = self.planner.config
        backoff = min(config.first_wait * config.growth**self._failures, config.max_wait)
        self._failures += 1
        self._not_before = now + (retry_after if retry_after is not None else backoff)

    def ended(self, now: float, *, at_once: bool) -> None:
        """Note the end, seen by a look (`at_once` False) or told as it happened (a webhook delivery)."""
        self.close()
        age = now - self.started_at
        if (
            not self.learn or age < 0
        ):  # a resumed task's gap is unknown; a clock that went back teaches nothing
            return
        ran_for = age if at_once else min(self.seen, age)
        self.planner.learn(self.key, TaskDuration(self.started_at, ran_for=ran_for, ended_within=age))

    def close(self) -> None:
        """Stop counting this task among those still running."""
        self.planner.forget(self)


class InMemoryDurations:
    """Task durations kept for this process only (a runner built without storage for them)."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, TaskKind], list[TaskDuration]] = {}

    async def record(
        self, provider: str, kind: TaskKind, durations: Sequence[TaskDuration], *, keep: int
    ) -> None:
        kept = sorted([*self._kept.get((provider, kind), []), *durations], key=lambda d: d.started_at)
        self._kept[(provider, kind)] = kept[-keep:]

    async def recent(self, provider: str, kind: TaskKind, limit: int) -> list[TaskDuration]:
        return self._kept.get((provider, kind), [])[-limit:]
