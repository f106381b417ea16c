"""The approach other bots of this kind take, on the same task times: poll every I seconds until the end.

A fixed-interval poller's cost and delay follow from a task's time alone: a task that takes T seconds is
polled at I, 2I, ... after its create and seen ended by the first poll at or after T. So the whole curve,
I from 0.5 to 10 s, is computed on the very tasks the bot ran in the same burst (their times as the fake
Freepik drew them), with no network and no phase luck of its own.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

# The intervals the curve is computed at: 0.5 s to 10 s in steps of 0.05 s.
INTERVALS = tuple(round(0.5 + 0.05 * step, 2) for step in range(191))


@dataclass(frozen=True, slots=True)
class FixedPoller:
    interval: float
    polls_per_task: float  # mean
    delay_p50: float  # from the end to the poll that saw it
    delay_p99: float


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the value below which `fraction` of the values lie (linear between ranks); NaN if none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * fraction
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def fixed_poller(task_seconds: Sequence[float], interval: float) -> FixedPoller:
    """Return what polling every `interval` seconds costs and how late it sees these tasks end."""
    polls = [max(1, math.ceil(seconds / interval - 1e-9)) for seconds in task_seconds]
    delays = [count * interval - seconds for count, seconds in zip(polls, task_seconds, strict=True)]
    return FixedPoller(
        interval,
        sum(polls) / len(polls) if polls else math.nan,
        percentile(delays, 0.5),
        percentile(delays, 0.99),
    )


def curve(task_seconds: Sequence[float]) -> list[FixedPoller]:
    """Return the fixed pollers every 0.5 to 10 s on these tasks, from the most polls to the fewest."""
    return [fixed_poller(task_seconds, interval) for interval in INTERVALS]


def at_same_cost(task_seconds: Sequence[float], polls_per_task: float) -> FixedPoller | None:
    """Return the fixed poller that spends `polls_per_task` on these tasks (interpolated on the curve).

    None when no interval from 0.5 to 10 s spends that many (more than every 0.5 s would, or fewer than
    every 10 s would).
    """
    points = curve(task_seconds)
    for faster, slower in itertools.pairwise(points):
        high, low = faster.polls_per_task, slower.polls_per_task
        if low <= polls_per_task <= high:
            share = 0.0 if high == low else (high - polls_per_task) / (high - low)
            return FixedPoller(
                faster.interval + share * (slower.interval - faster.interval),
                polls_per_task,
                faster.delay_p50 + share * (slower.delay_p50 - faster.delay_p50),
                faster.delay_p99 + share * (slower.delay_p99 - faster.delay_p99),
            )
    return None
