"""Counting what the core does without touching its code: the ports it uses, wrapped.

The runner saves every job as it moves (create, update, save_outputs, finish), the service reserves every
task through the quota ledger, and every provider request is a call to a capability: wrapping those ports
(in `bot.wiring`) sees each step exactly once, whatever the runner's internals become. The wrappers hand
every call on unchanged and tell `bot.domain.metrics.Metrics` what happened.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from bot.core.breaker import CircuitBreaker
from bot.domain.errors import LineFull, QuotaExceeded
from bot.domain.metrics import (
    LiveState,
    Metrics,
    Phase,
    ProviderOperation,
    QuotaRefusalReason,
    outcome_of,
    phase_of,
    request_status,
)
from bot.domain.ports import (
    Describer,
    Imaginer,
    JobRepository,
    KeyChecker,
    Provider,
    QuotaLedger,
    TaskPoller,
)
from bot.domain.quota import Member, Reservation
from bot.domain.tasks import DescribeRequest, ImageBytes, Job, JobState, TaskKind, TaskSnapshot


class MeteredJobs:
    """The runner's job repository: counts starts, provider completions and ends, and tracks live jobs.

    A job is live from its creation or claim until it ends, or until a lease renewal no longer lists it.
    """

    def __init__(
        self, inner: JobRepository, metrics: Metrics, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._inner = inner
        self._metrics = metrics
        self._clock = clock
        self._live: dict[str, tuple[str, Phase]] = {}  # job id -> (provider, phase), unfinished only

    def __getattr__(self, name: str) -> Any:
        # Everything not counted here (reads, routes, the cache, pruning) goes straight through.
        return getattr(self._inner, name)

    def live(self) -> Counter[tuple[str, Phase]]:
        """Return how many unfinished jobs this process holds, by provider and phase."""
        return Counter(self._live.values())

    async def create(self, job: Job, inputs: Sequence[ImageBytes] = ()) -> None:
        await self._inner.create(job, inputs)
        self._metrics.task_started(job.kind, job.provider)
        self._track(job)

    async def update(self, job: Job, **changes: Any) -> Job:
        return self._saw(job, await self._inner.update(job, **changes))

    async def save_outputs(self, job: Job, images: Sequence[ImageBytes], **changes: Any) -> Job:
        return self._saw(job, await self._inner.save_outputs(job, images, **changes))

    async def finish(self, job: Job) -> Job:
        finished = await self._inner.finish(job)
        self._live.pop(job.id, None)
        self._metrics.task_finished(job.kind, job.provider, outcome_of(job), job.fault)
        return finished

    async def claim(self, limit: int) -> list[Job]:
        jobs = await self._inner.claim(limit)
        for job in jobs:  # resumed at start or taken over: they count as live from now on
            self._track(job)
        return jobs

    async def cancel_waiting(self, job_id: str) -> Job | None:
        # Ended in line: it leaves the gauge now, not when its end is shown (which may never come).
        cancelled = await self._inner.cancel_waiting(job_id)
        if cancelled is not None:
            self._track(cancelled)
        return cancelled

    async def renew(self) -> set[str]:
        # Read before renewing: a job created meanwhile is live without being in this renewal's answer.
        tracked = set(self._live)
        held = await self._inner.renew()
        for job_id in tracked - held:  # another process drives it now (the runner stops its drive)
            self._live.pop(job_id, None)
        return held

    def _saw(self, before: Job, after: Job) -> Job:
        if after.state is JobState.COMPLETED and before.state is not JobState.COMPLETED:
            self._metrics.provider_completed(after.kind, after.provider, self._clock() - after.created_at)
        self._track(after)
        return after

    def _track(self, job: Job) -> None:
        phase = phase_of(job)
        if phase is None:
            self._live.pop(job.id, None)
        else:
            self._live[job.id] = (job.provider, phase)


class MeteredQuotas:
    """The service's quota ledger: counts the reservations it refuses, by kind and reason."""

    def __init__(self, inner: QuotaLedger, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def reserve(self, member: Member, kind: TaskKind, provider: str) -> Reservation:
        try:
            return await self._inner.reserve(member, kind, provider)
        except QuotaExceeded as exc:
            reason = QuotaRefusalReason.USED_UP if exc.limit > 0 else QuotaRefusalReason.SWITCHED_OFF
            self._metrics.quota_refused(kind, reason)
            raise
        except LineFull:
            self._metrics.quota_refused(kind, QuotaRefusalReason.LINE_FULL)
            raise


class _Timed:
    """Time one capability call and count it with how it ended."""

    def __init__(self, metrics: Metrics, provider: str, clock: Callable[[], float]) -> None:
        self._metrics = metrics
        self._provider = provider
        self._clock = clock

    async def call(self, operation: ProviderOperation, request: Any) -> Any:
        started = self._clock()
        try:
            result = await request
        except asyncio.CancelledError:
            raise  # stopped by the bot (shutdown), not answered: not a request outcome
        except Exception as exc:
            self._count(operation, request_status(exc), started)
            raise
        self._count(operation, request_status(None), started)
        return result

    def _count(self, operation: ProviderOperation, status: str, started: float) -> None:
        self._metrics.provider_request(self._provider, operation, status, self._clock() - started)


class _MeteredDescriber(_Timed):
    def __init__(self, inner: Describer, *args: Any) -> None:
        super().__init__(*args)
        self._inner = inner

    async def describe(
        self, image: ImageBytes, request: DescribeRequest, *, webhook_url: str | None
    ) -> TaskSnapshot:
        result: TaskSnapshot = await self.call(
            ProviderOperation.DESCRIBE, self._inner.describe(image, request, webhook_url=webhook_url)
        )
        return result


class _MeteredImaginer(_Timed):
    def __init__(self, inner: Imaginer, *args: Any) -> None:
        super().__init__(*args)
        self._inner = inner

    async def imagine(
        self, prompt: str, references: Sequence[ImageBytes], *, webhook_url: str | None
    ) -> TaskSnapshot:
        result: TaskSnapshot = await self.call(
            ProviderOperation.IMAGINE, self._inner.imagine(prompt, references, webhook_url=webhook_url)
        )
        return result

    async def fetch_results(self, snapshot: TaskSnapshot) -> TaskSnapshot:
        result: TaskSnapshot = await self.call(
            ProviderOperation.FETCH_RESULTS, self._inner.fetch_results(snapshot)
        )
        return result


class _MeteredPoller(_Timed):
    def __init__(self, inner: TaskPoller, *args: Any) -> None:
        super().__init__(*args)
        self._inner = inner

    async def poll(self, kind: TaskKind, task_id: str, *, chance: float = 1.0) -> TaskSnapshot:
        result: TaskSnapshot = await self.call(
            ProviderOperation.POLL, self._inner.poll(kind, task_id, chance=chance)
        )
        return result


class _MeteredKeyChecker(_Timed):
    def __init__(self, inner: KeyChecker, *args: Any) -> None:
        super().__init__(*args)
        self._inner = inner

    async def check_key(self) -> None:
        await self.call(ProviderOperation.CHECK_KEY, self._inner.check_key())


def metered_provider(
    provider: Provider, metrics: Metrics, *, clock: Callable[[], float] = time.monotonic
) -> Provider:
    """Return the provider with every request-making capability counted and timed (the rest unchanged)."""
    args = (metrics, provider.name, clock)
    return replace(
        provider,
        key_checker=_MeteredKeyChecker(provider.key_checker, *args),
        describer=_MeteredDescriber(provider.describer, *args) if provider.describer else None,
        imaginer=_MeteredImaginer(provider.imaginer, *args) if provider.imaginer else None,
        poller=_MeteredPoller(provider.poller, *args) if provider.poller else None,
    )


def live_state(jobs: MeteredJobs, breakers: Mapping[str, CircuitBreaker]) -> Callable[[], LiveState]:
    """Return a reader of the jobs this process drives and of each provider's breaker."""

    def read() -> LiveState:
        return LiveState(
            jobs=dict(jobs.live()), breakers={name: breaker.state for name, breaker in breakers.items()}
        )

    return read
