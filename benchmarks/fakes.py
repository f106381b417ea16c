"""The test fakes, as the benchmark needs them: a wide listen backlog, tasks of a set time +- jitter."""

from __future__ import annotations

import os
import random
import socket
import time
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


class TimedFreepik(FakeFreepik):
    """Tasks go CREATED -> IN_PROGRESS -> COMPLETED, each state lasting `seconds_per_state` +- jitter.

    With jitter 0 every task takes exactly the set time. A little jitter (seeded, so runs repeat) keeps a
    poller from being lucky or unlucky with its phase: a task of exactly 6 s is seen at once by a poller
    every 2 s, which real tasks of varying length never allow.
    """

    def __init__(self, *, seconds_per_state: float, jitter: float, seed: int = 8, **kwargs: Any) -> None:
        super().__init__(
            DEFAULT_FREEPIK_KEY, seconds_per_state=seconds_per_state, record_bodies=False, **kwargs
        )
        self.jitter = jitter
        self._random = random.Random(seed)
        self._steps: dict[str, float] = {}

    async def start(self) -> None:
        await super().start()
        widen_backlog(self._runner)

    def step_for(self, task_id: str) -> float:
        """Return how long each state of this task lasts (drawn once, at the task's first look)."""
        step = self._steps.get(task_id)
        if step is None:
            base = self.seconds_per_state or 0.0
            step = base * (1 + self._random.uniform(-self.jitter, self.jitter))
            self._steps[task_id] = step
        return step

    def completed_at(self, task_id: str) -> float:
        """Return the monotonic time at which the task is (or was) COMPLETED at the provider."""
        task = self.tasks[task_id]
        return task.created_at + 2 * self.step_for(task_id)

    def _target_stage(self, task: FakeTask, *, polled: bool) -> int | None:
        step = self.step_for(task.task_id)
        if step <= 0:
            return 2
        return min(2, int((time.monotonic() - task.created_at) // step))
