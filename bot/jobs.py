"""The job runner: start a provider task, poll it or wait for its webhook, save and report each new state."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from bot.background import BackgroundTasks
from bot.errors import BadInput, ProviderError, ProviderFault, StorageFull
from bot.images import refit
from bot.providers.base import (
    GeneratedImage,
    ImageLimits,
    InputImage,
    Provider,
    TaskKind,
    TaskSnapshot,
    TaskState,
)
from bot.providers.breaker import CircuitBreaker
from bot.store.jobs import Job, JobStore
from bot.store.quotas import QuotaStore
from bot.ui import text

log = logging.getLogger(__name__)

# Faults at create time after which describe may go to another provider: nothing was created.
_FALLBACK_FAULTS = frozenset(
    {ProviderFault.BUSY, ProviderFault.UNREACHABLE, ProviderFault.UNAVAILABLE, ProviderFault.MISCONFIGURED}
)
# Poll failures that say nothing about the task itself: keep polling until the deadline.
_TRANSIENT_POLL_FAULTS = frozenset(
    {ProviderFault.BUSY, ProviderFault.UNREACHABLE, ProviderFault.LOST, ProviderFault.BAD_RESULT}
)
# Generated images are shown as Discord uploads, which may not exceed 10 MiB on a server without boosts.
RESULT_UPLOAD_LIMITS = ImageLimits(max_side=8192, max_bytes=9_500_000)
# Deliveries that arrive before the create answer is saved wait here this long for their job.
_EARLY_DELIVERY_TTL = 120.0


class JobReporter(Protocol):
    """The seam to Discord: show a job's saved state on its message."""

    async def report(self, job: Job) -> None:
        """Show the job; a final state is shown before this returns, earlier ones may be coalesced."""
        ...

    async def forget(self, job_id: str) -> None:
        """Drop what is kept for a job whose runner stopped (shutdown)."""
        ...


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    poll_interval: float
    poll_max_interval: float
    task_timeout: float
    # A synchronous provider's answer that takes longer than this is shown as "In progress" meanwhile
    # (the reporter's coalescing window: a quicker answer replaces that edit anyway).
    progress_after: float = 1.0
    # With webhooks on, polling is only the safety net for a lost delivery: slow and steady.
    webhook_poll_interval: float = 30.0
    poll_growth: float = 1.5


class _Stopping(Exception):
    """The runner is shutting down; the job's state is saved and it resumes at the next start."""


class JobRunner:
    """Drive every job to its end; a restart reloads unfinished jobs and carries them on."""

    def __init__(
        self,
        *,
        jobs: JobStore,
        quotas: QuotaStore,
        providers: Mapping[str, Provider],
        breakers: Mapping[str, CircuitBreaker],
        reporter: JobReporter,
        config: RunnerConfig,
        webhook_url_for: Callable[[str], str | None] = lambda provider: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._jobs = jobs
        self._quotas = quotas
        self._providers = providers
        self._breakers = breakers
        self._reporter = reporter
        self._config = config
        self._webhook_url_for = webhook_url_for
        self._clock = clock
        self._tasks = BackgroundTasks()
        self._running: dict[str, asyncio.Task[None]] = {}
        # Webhook snapshots for the jobs driven here, by (provider, task id), with the job's kind.
        self._deliveries: dict[tuple[str, str], tuple[TaskKind, asyncio.Queue[TaskSnapshot]]] = {}
        self._early: dict[tuple[str, str], tuple[float, dict[str, object]]] = {}
        self._stopping = asyncio.Event()
        self.accepting = True

    @property
    def running_count(self) -> int:
        return len(self._running)

    async def submit(self, job: Job, inputs: list[InputImage]) -> Job:
        """Save a new job with its inputs and start driving it."""
        await self._jobs.create(job, inputs)
        self._spawn(job, inputs=inputs)
        return job

    async def finish_cached(self, job: Job, inputs: list[InputImage]) -> Job:
        """Save and report a job answered from the cache (already COMPLETED, nothing reserved)."""
        await self._jobs.create(job, inputs)
        await self._reporter.report(job)
        return await self._jobs.update(job, finished_at=self._clock(), interaction_token=None)

    async def resume(self) -> int:
        """Carry on every job the last run left unfinished; return how many."""
        jobs = await self._jobs.unfinished()
        for job in jobs:
            log.info("resuming job %s (%s, %s)", job.id, job.provider, job.state)
            self._spawn(job, resumed=True)
        return len(jobs)

    async def deliver(self, provider_name: str, payload: Mapping[str, object]) -> bool:
        """Take a webhook delivery; return False when no job of ours has that task id."""
        task_id = str(payload.get("task_id", ""))
        key = (provider_name, task_id)
        listening = self._deliveries.get(key)
        if listening is not None:
            kind, queue = listening
            queue.put_nowait(self._providers[provider_name].snapshot_from_webhook(kind, payload))
            return True
        if await self._jobs.find_by_task(provider_name, task_id) is not None:
            return True  # known but not driven here (finished, or another process): polling covers it
        # The create answer may still be on its way: keep the delivery for a little while.
        self._forget_stale_early()
        self._early[key] = (self._clock(), dict(payload))
        return False

    async def shutdown(self, grace: float = 10.0) -> None:
        """Stop taking jobs; let requests in flight reach a safe point, then stop every drive."""
        self.accepting = False
        self._stopping.set()
        running = list(self._running.values())
        if running:
            _, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
        await self._tasks.cancel_all()

    # --- driving one job --------------------------------------------------------------------

    def _spawn(self, job: Job, *, resumed: bool = False, inputs: list[InputImage] | None = None) -> None:
        task = self._tasks.spawn(self._drive(job, resumed=resumed, inputs=inputs), name=f"job-{job.id[:12]}")
        self._running[job.id] = task
        task.add_done_callback(lambda _: self._running.pop(job.id, None))

    async def _drive(self, job: Job, *, resumed: bool, inputs: list[InputImage] | None = None) -> None:
        key: tuple[str, str] | None = None
        try:
            if not job.finished:
                if job.state is TaskState.QUEUED:
                    job = await self._start(job, inputs)
                elif job.state is TaskState.STARTING:
                    # The create went out and its answer was never saved: the task may exist, but we
                    # cannot find it (no idempotency key), and sending it again might pay twice.
                    raise ProviderError(  # noqa: TRY301 (one path to the failure report below)
                        job.provider, ProviderFault.LOST, "the bot stopped while creating the task"
                    )
                if job.provider_task_id is not None:
                    key = self._listen(job.provider, job.provider_task_id, job.kind)
                job = await self._poll_until_finished(job, key, resumed=resumed)
            await self._settle_and_report(job)
        except _Stopping:
            await self._reporter.forget(job.id)
            log.info("job %s paused for shutdown in state %s", job.id, job.state)
        except StorageFull:
            # Nothing more can be saved (the database logged why): the job keeps its last saved state
            # and carries on from it at the next start, when there is room again.
            await self._reporter.forget(job.id)
            log.info("job %s paused in state %s: the database cannot be written", job.id, job.state)
        except ProviderError as exc:
            await self._settle_and_report(await self._fail(job, exc.fault, exc))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s broke unexpectedly", job.id)
            await self._settle_and_report(await self._fail(job, ProviderFault.BAD_RESULT, None))
        finally:
            if job.provider_task_id is not None:
                self._deliveries.pop((job.provider, job.provider_task_id), None)

    async def _start(self, job: Job, inputs: list[InputImage] | None) -> Job:
        if self._stopping.is_set():
            raise _Stopping
        if inputs is None:  # a resumed job: its inputs are only in the database
            inputs = await self._jobs.images(job.id, "input")
        try:
            return await self._start_with(job, job.provider, inputs)
        except ProviderError as exc:
            alternative = self._fallback_for(job, exc)
            if alternative is None:
                raise
            log.warning(
                "job %s: %s unavailable (%s); falling back to %s",
                job.id,
                job.provider,
                exc.fault,
                alternative,
            )
            limits = self._providers[alternative].image_limits
            refitted = [await _refit(image, limits) for image in inputs]
            notice = text.FALLBACK_NOTICE.format(
                failed=text.provider_name(job.provider), used=text.provider_name(alternative)
            )
            job = await self._jobs.update(job, provider=alternative, notice=notice, state=TaskState.QUEUED)
            if job.usage_id is not None:
                await self._quotas.move(job.usage_id, alternative)
            return await self._start_with(job, alternative, refitted)

    async def _start_with(self, job: Job, provider_name: str, inputs: list[InputImage]) -> Job:
        provider = self._providers[provider_name]
        breaker = self._breakers[provider_name]
        breaker.check()
        # Saved before the request: a crash mid-create is then known as such at the next start.
        job = await self._jobs.update(job, state=TaskState.STARTING)
        webhook_url = None if provider.is_synchronous else self._webhook_url_for(provider_name)
        if job.kind is TaskKind.DESCRIBE:
            create = provider.start_describe(inputs[0], webhook_url=webhook_url)
        else:
            create = provider.start_imagine(job.prompt or "", inputs, webhook_url=webhook_url)
        try:
            if provider.is_synchronous:
                snapshot = await self._answer_showing_progress(job, create)
            else:
                snapshot = await create
        except ProviderError as exc:
            breaker.record_failure(exc.fault)
            if exc.fault is not ProviderFault.LOST:
                # Nothing was created: the job may go elsewhere or end cleanly.
                await self._jobs.update(job, state=TaskState.QUEUED)
            raise
        breaker.record_success()
        if not snapshot.state.finished:
            # Listen before saving: a delivery may follow the create answer within milliseconds.
            self._listen(provider_name, snapshot.task_id, job.kind)
        job = await self._jobs.update(job, provider_task_id=snapshot.task_id, started_at=self._clock())
        if job.usage_id is not None:
            await self._quotas.record_task_id(job.usage_id, snapshot.task_id)
        return await self._advance(job, snapshot)

    async def _answer_showing_progress(
        self, job: Job, answer: Coroutine[Any, Any, TaskSnapshot]
    ) -> TaskSnapshot:
        """Wait for a synchronous provider's answer, showing "In progress" once it is slow in coming."""
        pending = asyncio.ensure_future(answer)
        try:
            done, _ = await asyncio.wait({pending}, timeout=self._config.progress_after)
            if not done:
                # Shown, not saved: the saved STARTING state is what tells a restart the answer was lost.
                await self._reporter.report(replace(job, state=TaskState.IN_PROGRESS))
            return await pending
        except BaseException:
            pending.cancel()
            raise

    def _fallback_for(self, job: Job, exc: ProviderError) -> str | None:
        if job.kind is not TaskKind.DESCRIBE or exc.fault not in _FALLBACK_FAULTS or job.notice:
            return None
        for name, provider in self._providers.items():
            if (
                name != job.provider
                and TaskKind.DESCRIBE in provider.kinds
                and not self._breakers[name].is_open
            ):
                return name
        return None

    def _listen(self, provider_name: str, task_id: str, kind: TaskKind) -> tuple[str, str]:
        """Route this task's webhook deliveries to its drive (idempotent)."""
        key = (provider_name, task_id)
        if key not in self._deliveries:
            queue: asyncio.Queue[TaskSnapshot] = asyncio.Queue()
            self._deliveries[key] = (kind, queue)
            early = self._early.pop(key, None)
            if early is not None:
                queue.put_nowait(self._providers[provider_name].snapshot_from_webhook(kind, early[1]))
        return key

    async def _poll_until_finished(self, job: Job, key: tuple[str, str] | None, *, resumed: bool) -> Job:
        provider = self._providers[job.provider]
        webhooks = self._webhook_url_for(job.provider) is not None
        interval = self._config.webhook_poll_interval if webhooks else self._config.poll_interval
        ceiling = max(interval, self._config.poll_max_interval)
        deadline = job.created_at + self._config.task_timeout
        listening = self._deliveries.get(key) if key else None
        queue = listening[1] if listening else None
        # A resumed job is polled at once: the task may have finished while the bot was away, and
        # its result beats a timeout.
        poll_now = resumed
        while not job.finished:
            remaining = deadline - self._clock()
            if remaining <= 0 and not poll_now:
                raise ProviderError(job.provider, ProviderFault.TIMEOUT)
            if poll_now:
                poll_now = False
                snapshot = None
            else:
                snapshot = await self._wait_for_delivery(queue, min(interval, remaining))
            if snapshot is None:
                snapshot = await self._poll_once(provider, job)
                interval = min(interval * self._config.poll_growth, ceiling)
            if snapshot is not None:
                job = await self._advance(job, snapshot)
        return job

    async def _wait_for_delivery(
        self, queue: asyncio.Queue[TaskSnapshot] | None, timeout: float
    ) -> TaskSnapshot | None:
        """Wait for a webhook snapshot, the next poll time, or shutdown, whichever comes first."""
        waiters: list[asyncio.Future[object]] = [asyncio.ensure_future(self._stopping.wait())]
        if queue is not None:
            waiters.append(asyncio.ensure_future(queue.get()))
        try:
            done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self._stopping.is_set():
            raise _Stopping
        for waiter in done:
            result = waiter.result()
            if isinstance(result, TaskSnapshot):
                return result
        return None

    async def _poll_once(self, provider: Provider, job: Job) -> TaskSnapshot | None:
        assert job.provider_task_id is not None
        try:
            return await provider.poll(job.kind, job.provider_task_id)
        except ProviderError as exc:
            if exc.fault in _TRANSIENT_POLL_FAULTS:
                log.info("job %s: poll failed (%s); polling on", job.id, exc.fault)
                return None
            raise

    async def _advance(self, job: Job, snapshot: TaskSnapshot) -> Job:
        """Save a snapshot's state if it is new, then report it; unchanged polls report nothing."""
        if snapshot.state is job.state or snapshot.state in (TaskState.QUEUED, TaskState.STARTING):
            return job
        provider = self._providers[job.provider]
        if snapshot.state is TaskState.FAILED:
            return await self._fail(job, ProviderFault.FAILED, None)
        if snapshot.state is TaskState.COMPLETED:
            if job.kind is TaskKind.DESCRIBE:
                if not snapshot.prompt:
                    raise ProviderError(job.provider, ProviderFault.BAD_RESULT, "completed without a prompt")
                job = await self._jobs.update(job, state=TaskState.COMPLETED, result_text=snapshot.prompt)
                if job.input_hash:
                    await self._jobs.cache_prompt(job.input_hash, job.provider, snapshot.prompt)
            else:
                # Provider URLs expire: fetch the images now and keep them with the job.
                fetched = await provider.fetch_results(snapshot)
                uploadable = [await _refit(image, RESULT_UPLOAD_LIMITS) for image in fetched.images]
                job = await self._jobs.save_outputs(job, uploadable, state=TaskState.COMPLETED)
            return job
        job = await self._jobs.update(job, state=snapshot.state)
        await self._reporter.report(job)
        return job

    async def _fail(self, job: Job, fault: ProviderFault, exc: ProviderError | None) -> Job:
        if exc is not None and exc.fault is not ProviderFault.UNAVAILABLE:
            log.info("job %s failed: %s", job.id, exc)
        return await self._jobs.update(job, state=TaskState.FAILED, fault=fault)

    async def _settle_and_report(self, job: Job) -> None:
        """Spend or give back the reservation (once), show the end, and close the job."""
        if job.usage_id is not None:
            if job.state is TaskState.COMPLETED or (job.fault is ProviderFault.REJECTED):
                await self._quotas.commit(job.usage_id, outcome=str(job.fault or job.state))
            else:
                await self._quotas.refund(job.usage_id, outcome=str(job.fault or job.state))
        await self._reporter.report(job)
        await self._jobs.update(job, finished_at=self._clock(), interaction_token=None)
        log.info(
            "task finished",
            extra={
                "job_id": job.id,
                "user_id": job.user_id,
                "guild_id": job.guild_id,
                "provider": job.provider,
                "kind": job.kind.value,
                "state": job.state.value,
                "fault": job.fault.value if job.fault else None,
                "duration": round(self._clock() - job.created_at, 3),
            },
        )

    def _forget_stale_early(self) -> None:
        cutoff = self._clock() - _EARLY_DELIVERY_TTL
        for key in [key for key, (at, _) in self._early.items() if at < cutoff]:
            del self._early[key]


async def _refit(image: InputImage | GeneratedImage, limits: ImageLimits) -> InputImage:
    try:
        return await asyncio.to_thread(refit, image, limits)
    except BadInput as exc:  # the bytes passed the checks once: failing now is not the member's doing
        raise ProviderError("bot", ProviderFault.BAD_RESULT, "stored image no longer fits") from exc
