"""The test fakes, as the benchmark needs them: a wide listen backlog, tasks whose times follow a workload."""

from __future__ import annotations

import math
import os
import random
import socket
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.discord import FakeDiscord
from tests.fakes.providers import DEFAULT_FREEPIK_KEY, FakeFreepik, FakeTask

# aiohttp listens with a backlog of 128: a burst of 500 new connections overflows it, and each dropped
# SYN costs the client a 1 s retransmit. Discord's edge has no such limit, so the fakes get a wide one.
LISTEN_BACKLOG = 4096


def widen_backlog(runner: web.AppRunner | None) -> None:
    """Listen again with a wide backlog on every socket of a started aiohttp runner (Linux updates it)."""
    if runner is None:
        return
    for site in runner.sites:
        server = getattr(site, "_server", None)
        for listening in getattr(server, "sockets", None) or ():
            duplicate = socket.socket(fileno=os.dup(listening.fileno()))
            try:
                duplicate.listen(LISTEN_BACKLOG)
            finally:
                duplicate.close()


class BenchDiscord(FakeDiscord):
    """The tests' fake Discord with a listen backlog wide enough for a burst of 500."""

    async def start(self) -> None:
        await super().start()
        widen_backlog(self._runner)


@dataclass(frozen=True, slots=True)
class Workload:
    """How long the provider's tasks take: each is drawn once (seeded), IN_PROGRESS at half, the end at all.

    `steady`: each of the two states lasts `seconds_per_state` ±`jitter` (today's workload). `long-tail`:
    the whole task is log-normal with the given median and 95th percentile, drawn again past `cut` so that a
    burst ends (a few percent of draws at the issue's 8 s and 40 s and a cut of 60 s).
    """

    name: str
    seconds_per_state: float = 3.0
    jitter: float = 0.25
    median: float = 0.0
    p95: float = 0.0
    cut: float = 0.0

    @classmethod
    def steady(cls, seconds_per_state: float, jitter: float) -> Workload:
        return cls("steady", seconds_per_state=seconds_per_state, jitter=jitter)

    @classmethod
    def long_tail(cls, median: float, p95: float, cut: float) -> Workload:
        return cls("long-tail", median=median, p95=p95, cut=cut)

    @property
    def longest(self) -> float:
        """Return the longest a task of this workload can take."""
        if self.name == "steady":
            return 2 * self.seconds_per_state * (1 + self.jitter)
        return self.cut

    def draw(self, rng: random.Random) -> float:
        """Return how long one task takes, from its create to its end."""
        if self.name == "steady":
            return 2 * self.seconds_per_state * (1 + rng.uniform(-self.jitter, self.jitter))
        sigma = math.log(self.p95 / self.median) / _Z95
        while True:
            seconds = self.median * math.exp(rng.gauss(0.0, sigma))
            if seconds <= self.cut:
                return seconds

    def line(self) -> str:
        if self.name == "steady":
            return f"{self.seconds_per_state:g} s per state ±{self.jitter:.0%}"
        return f"log-normal, median {self.median:g} s, p95 {self.p95:g} s, cut at {self.cut:g} s"


_Z95 = 1.6448536269514722  # the standard normal's 95th percentile


class TimedFreepik(FakeFreepik):
    """Tasks go CREATED -> IN_PROGRESS (at half their time) -> COMPLETED, each lasting a time drawn once.

    The times are seeded, so runs repeat. With the steady workload and jitter 0 every task takes exactly the
    set time; a little jitter keeps a poller from being lucky or unlucky with its phase: a task of exactly
    6 s is seen at once by a poller every 2 s, which real tasks of varying length never allow.
    """

    def __init__(self, *, workload: Workload, seed: int = 8, **kwargs: Any) -> None:
        # Any seconds_per_state puts the fake in time mode (its webhook ticker runs); the workload sets the times.
        super().__init__(DEFAULT_FREEPIK_KEY, seconds_per_state=1.0, record_bodies=False, **kwargs)
        self.workload = workload
        self._random = random.Random(seed)
        self._durations: dict[str, float] = {}

    async def start(self) -> None:
        await super().start()
        widen_backlog(self._runner)

    def duration_of(self, task_id: str) -> float:
        """Return how long this task takes (drawn once, at the task's first look)."""
        duration = self._durations.get(task_id)
        if duration is None:
            duration = self._durations[task_id] = self.workload.draw(self._random)
        return duration

    def completed_at(self, task_id: str) -> float:
        """Return the monotonic time at which the task is (or was) COMPLETED at the provider."""
        return self.tasks[task_id].created_at + self.duration_of(task_id)

    def _target_stage(self, task: FakeTask, *, polled: bool) -> int | None:
        duration = self.duration_of(task.task_id)
        if duration <= 0:
            return 2
        return min(2, int(2 * (time.monotonic() - task.created_at) // duration))
