"""The job runner: start a provider task, poll it or wait for its webhook, save and report each new state.

A job's life is a loop over its saved state: QUEUED is started, STARTING at a resume is an answer that was
lost, CREATED and IN_PROGRESS are waited out; every step returns the job as it now is, and the end is
settled (the quota spent or given back) and reported once. Shutdown pauses a job in its saved state; the
next start carries it on.

Which jobs this process drives is the store's to say (`JobRepository.claim`): on its own store, every
unfinished one. On a store several processes share, each job is leased to one live process: the runner
renews its leases and looks for jobs whose driver died every third of a lease, takes those over from their
saved state, and stops driving a job the moment its lease is found lost (LeaseLost, or a renewal that no
longer lists it). A webhook delivery for a task driven by another process is left in the store's relay,
and the driver takes it from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bot.core.background import BackgroundTasks
from bot.core.breaker import CircuitBreaker
from bot.core.images import refit
from bot.domain.errors import BadInput, LeaseLost, ProviderError, StorageFull, StoreUnavailable
from bot.domain.ports import (
    DeliveryRelay,
    JobReporter,
    JobRepository,
    Provider,
    QuotaLedger,
    WebhookDelivery,
)
from bot.domain.tasks import (
    Fault,
    ImageBytes,
    ImageLimits,
    Job,
    JobState,
    Notice,
    NoticeCode,
    ProviderStatus,
    TaskKind,
    TaskSnapshot,
)

log = logging.getLogger(__name__)

# Faults at create time after which describe may go to another provider: nothing was created.
_FALLBACK_FAULTS = frozenset({Fault.BUSY, Fault.UNREACHABLE, Fault.UNAVAILABLE, Fault.MISCONFIGURED})
# Poll failures that say nothing about the task itself: keep polling until the deadline.
_TRANSIENT_POLL_FAULTS = frozenset({Fault.BUSY, Fault.UNREACHABLE, Fault.LOST, Fault.BAD_RESULT})
# Generated images are shown as Discord uploads, which may not exceed 10 MiB on a server without boosts.
RESULT_UPLOAD_LIMITS = ImageLimits(max_side=8192, max_bytes=9_500_000)
# A lease that runs out is claimed this long after (the database's clock and ours need not tick together).
_NEXT_CLAIM_MARGIN = 0.05
# Deliveries that arrive before the create answer is saved wait here this long for their job.
_EARLY_DELIVERY_TTL = 120.0


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
    # On a store several processes share: how often this process renews its leases and looks for jobs
    # left by a process that died (a third of the lease, so two renewals can fail before one runs out),
    # and how many jobs it takes over at a time.
    lease_renewal: float = 10.0
    claim_batch: int = 50


class JobRunner:
    """Drive every job to its end; a restart reloads unfinished jobs and carries them on."""

    def __init__(
        self,
        *,
        jobs: JobRepository,
        quotas: QuotaLedger,
        providers: Mapping[str, Provider],
        breakers: Mapping[str, CircuitBreaker],
        reporter: JobReporter,
        config: RunnerConfig,
        webhook_url_for: Callable[[str], str | None] = lambda provider: None,
        relay: DeliveryRelay | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._jobs = jobs
        self._quotas = quotas
        self._providers = providers
        self._breakers = breakers
        self._reporter = reporter
        self._config = config
        self._webhook_url_for = webhook_url_for
        self._relay = relay
        self._clock = clock
        self._tasks = BackgroundTasks()
        self._running: dict[str, asyncio.Task[None]] = {}
        # Webhook snapshots for the jobs driven here, by (provider, task id), with the job's kind.
        self._deliveries: dict[tuple[str, str], tuple[TaskKind, asyncio.Queue[TaskSnapshot]]] = {}
        self._listening: dict[str, tuple[str, str]] = {}  # job id -> its key in _deliveries
        self._early: dict[tuple[str, str], tuple[float, WebhookDelivery]] = {}
        # Jobs this process stopped driving because another one holds them now, and jobs it paused
        # because the store could not be reached (carried on at the next renewal, on a shared store).
        self._lost: set[str] = set()
        self._paused: set[str] = set()
        self._stopping = asyncio.Event()
        self.accepting = True

    @property
    def running_count(self) -> int:
        return len(self._running)

    async def submit(self, job: Job, inputs: Sequence[ImageBytes]) -> Job:
        """Save a new job with its inputs and start driving it."""
        await self._jobs.create(job, inputs)
        self._spawn(job, inputs=list(inputs))
        return job

    async def finish_cached(self, job: Job, inputs: Sequence[ImageBytes]) -> Job:
        """Save and report a job answered from the cache (already COMPLETED, nothing reserved)."""
        await self._jobs.create(job, inputs)
        await self._reporter.report(job)
        return await self._jobs.finish(job)

    async def resume(self) -> int:
        """Carry on the unfinished jobs this process may drive (every one, on its own store); return how many.

        On a store several processes share, this process then keeps its leases and takes over the jobs
        of any process that dies, until shutdown; deliveries relayed by other processes reach it.
        """
        if self._relay is not None:
            await self._relay.listen(self._relayed)
        resumed = 0
        while True:
            claimed, started = await self._claim(verb="resuming")
            resumed += started
            # A shared store hands out a batch at a time; one's own store hands out everything at once.
            if not self._jobs.shared or claimed < self._config.claim_batch:
                break
        if self._jobs.shared:
            self._tasks.spawn(self._keep_leases(), name="job-leases")
        return resumed

    async def _claim(self, *, verb: str) -> tuple[int, int]:
        """Start driving the jobs the store hands this process; return how many it handed and how many were new."""
        jobs = await self._jobs.claim(self._config.claim_batch)
        started = 0
        for job in jobs:
            if job.id in self._running or self._stopping.is_set():
                continue
            log.info("%s job %s (%s, %s)", verb, job.id, job.provider, job.state)
            self._spawn(job, resumed=True)
            started += 1
        return len(jobs), started

    async def _keep_leases(self) -> None:
        """Renew this process's leases, stop the drives it lost, and take over jobs whose driver died.

        It wakes every third of a lease to renew, and also just after the next lease of another process
        runs out, so a dead process's jobs are taken over within one lease of its last renewal.
        """
        interval = self._config.lease_renewal
        wait = interval
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait)
            if self._stopping.is_set():
                return
            wait = interval
            try:
                driving = {job_id for job_id, task in self._running.items() if not task.done()}
                held = await self._jobs.renew()
                for job_id in driving - held:
                    self._lose(job_id)
                await self._carry_on_paused(held)
                claimed, _ = await self._claim(verb="taking over")
                if claimed >= self._config.claim_batch:
                    wait = _NEXT_CLAIM_MARGIN  # more are waiting: take the next batch at once
                else:
                    expires_in = await self._jobs.next_expiry()
                    if expires_in is not None:
                        wait = min(interval, max(expires_in, 0.0) + _NEXT_CLAIM_MARGIN)
            except (StoreUnavailable, StorageFull) as exc:
                log.warning(
                    "could not renew this process's job leases (%s); trying again in %.0f s", exc, interval
                )

    def _lose(self, job_id: str) -> None:
        task = self._running.get(job_id)
        if task is None or task.done():
            return
        log.warning(
            "job %s: another process drives it now (this process's lease ran out); stopping here", job_id
        )
        self._lost.add(job_id)
        task.cancel()

    async def _carry_on_paused(self, held: set[str]) -> None:
        """Drive again the jobs paused while the store was away, if this process still holds them."""
        for job_id in list(self._paused):
            self._paused.discard(job_id)
            if job_id not in held or job_id in self._running:
                continue
            job = await self._jobs.get(job_id)
            if job is not None and job.finished_at is None:
                log.info("job %s: the database answers again; carrying on from %s", job.id, job.state)
                self._spawn(job, resumed=True)

    async def deliver(self, provider_name: str, body: bytes) -> bool:
        """Take a verified webhook delivery; return False when no job of ours has its task.

        Raises ProviderError (BAD_RESULT) when the body is not the provider's task object.
        """
        provider = self._providers.get(provider_name)
        if provider is None or provider.webhooks is None:
            return False
        delivery = provider.webhooks.read_delivery(body)
        key = (provider_name, delivery.task_id)
        listening = self._deliveries.get(key)
        if listening is not None:
            kind, queue = listening
            queue.put_nowait(provider.webhooks.snapshot(kind, delivery))
            return True
        try:
            return await self._deliver_elsewhere(provider_name, key, delivery, body)
        except (StoreUnavailable, StorageFull) as exc:
            # The database is away: the task's driver finds the end by polling, the safety net.
            log.warning(
                "a %s webhook delivery could not be handed on (%s); polling carries on", provider_name, exc
            )
            return True

    async def _deliver_elsewhere(
        self, provider_name: str, key: tuple[str, str], delivery: WebhookDelivery, body: bytes
    ) -> bool:
        job = await self._jobs.find_by_task(provider_name, delivery.task_id)
        if job is not None:
            if self._relay is not None and job.finished_at is None:
                # Driven by another process: it takes the delivery from the relay.
                await self._relay.post(provider_name, delivery.task_id, body)
            return True  # known and ended, or driven elsewhere; polling is the safety net either way
        # The create answer may still be on its way: keep the delivery for a little while, here and (the
        # driver may be another process) in the relay, where the driver finds it once it listens.
        self._forget_stale_early()
        self._early[key] = (self._clock(), delivery)
        if self._relay is not None:
            await self._relay.post(provider_name, delivery.task_id, body)
        return False

    async def shutdown(self, grace: float = 10.0) -> None:
        """Stop taking jobs; let requests in flight reach a safe point, then stop every drive.

        On a shared store the paused jobs' leases are given back, so another process carries them on now.
        """
        self.accepting = False
        self._stopping.set()
        running = list(self._running.values())
        if running:
            _, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
        await self._tasks.cancel_all()
        if self._relay is not None:
            await self._relay.close()
        if self._jobs.shared:
            try:
                await self._jobs.release()
            except (StoreUnavailable, StorageFull) as exc:
                log.warning("could not give back the job leases (%s); they run out by themselves", exc)

    # --- driving one job --------------------------------------------------------------------

    def _spawn(self, job: Job, *, resumed: bool = False, inputs: list[ImageBytes] | None = None) -> None:
        task = self._tasks.spawn(self._drive(job, resumed=resumed, inputs=inputs), name=f"job-{job.id[:12]}")
        self._running[job.id] = task
        task.add_done_callback(lambda _: self._running.pop(job.id, None))

    async def _drive(self, job: Job, *, resumed: bool, inputs: list[ImageBytes] | None) -> None:
        try:
            ended = await self._run(job, resumed=resumed, inputs=inputs)
        except asyncio.CancelledError:
            if job.id not in self._lost:
                raise
            self._lost.discard(job.id)
            await self._reporter.forget(job.id)
            return
        except LeaseLost:
            # Another process claimed the job (this one's lease ran out): it carries the job on from its
            # saved state, and nothing more is written or shown from here.
            await self._reporter.forget(job.id)
            log.warning("job %s: another process drives it now; stopping here", job.id)
            return
        except (StorageFull, StoreUnavailable) as exc:
            # Nothing more can be saved (the database logged why): the job keeps its last saved state
            # and carries on from it at the next start (on a shared store, once the database answers).
            await self._reporter.forget(job.id)
            self._paused.add(job.id)
            log.info("job %s paused in state %s: the database cannot be written (%s)", job.id, job.state, exc)
            return
        except Exception:
            log.exception("job %s broke unexpectedly", job.id)
            ended = await self._end(job, Fault.BAD_RESULT)
        finally:
            self._stop_listening(job.id)
        if ended is None:
            await self._reporter.forget(job.id)
            log.info("job %s paused for shutdown in state %s", job.id, job.state)
            return
        await self._settle_and_report(ended)

    async def _run(self, job: Job, *, resumed: bool, inputs: list[ImageBytes] | None) -> Job | None:
        """Move the job from its saved state to its end; None when shutdown paused it."""
        while not job.finished:
            step: Job | None
            if job.state is JobState.QUEUED:
                step = await self._start(job, inputs)
            elif job.state is JobState.STARTING:
                # The create went out and its answer was never saved: the task may exist, but it cannot
                # be found (no idempotency key), and sending it again might pay twice.
                step = await self._end(job, Fault.LOST, "the bot stopped while creating the task")
            else:
                step = await self._wait_for_end(job, poll_now=resumed)
                resumed = False
            if step is None:
                return None
            job = step
        return job

    async def _start(self, job: Job, inputs: list[ImageBytes] | None) -> Job | None:
        if self._stopping.is_set():
            return None
        if inputs is None:  # a resumed job: its inputs are only in the database
            inputs = await self._jobs.images(job.id, "input")
        try:
            return await self._start_with(job, job.provider, inputs)
        except ProviderError as exc:
            alternative = self._fallback_for(job, exc.fault)
            if alternative is None:
                return await self._end(job, exc.fault, exc)
            log.warning(
                "job %s: %s unavailable (%s); falling back to %s",
                job.id,
                job.provider,
                exc.fault,
                alternative,
            )
        notice = Notice(NoticeCode.FALLBACK, {"failed": job.provider, "used": alternative})
        job = await self._jobs.update(job, provider=alternative, notice=notice, state=JobState.QUEUED)
        if job.usage_id is not None:
            await self._quotas.move(job.usage_id, alternative)
        try:
            limits = self._providers[alternative].image_limits
            refitted = [await _refit(image, limits) for image in inputs]
            return await self._start_with(job, alternative, refitted)
        except ProviderError as exc:
            return await self._end(job, exc.fault, exc)

    async def _start_with(self, job: Job, provider_name: str, inputs: list[ImageBytes]) -> Job:
        """Create the provider task (raising ProviderError when nothing came of it) and save its first state."""
        provider = self._providers[provider_name]
        breaker = self._breakers[provider_name]
        breaker.check()
        # Saved before the request: a crash mid-create is then known as such at the next start.
        job = await self._jobs.update(job, state=JobState.STARTING)
        webhook_url = None if provider.synchronous else self._webhook_url_for(provider_name)
        try:
            if provider.synchronous:
                snapshot = await self._answer_showing_progress(
                    job, self._create(provider, job, inputs, webhook_url)
                )
            else:
                snapshot = await self._create(provider, job, inputs, webhook_url)
        except ProviderError as exc:
            breaker.record_failure(exc.fault)
            if exc.fault is not Fault.LOST:
                # Nothing was created: the job may go elsewhere or end cleanly.
                await self._jobs.update(job, state=JobState.QUEUED)
            raise
        breaker.record_success()
        if snapshot.status is not ProviderStatus.COMPLETED and snapshot.status is not ProviderStatus.FAILED:
            # Listen before saving: a delivery may follow the create answer within milliseconds.
            self._listen(job, provider_name, snapshot.task_id)
        job = await self._jobs.update(job, provider_task_id=snapshot.task_id, started_at=self._clock())
        if job.usage_id is not None:
            await self._quotas.record_task_id(job.usage_id, snapshot.task_id)
        return await self._advance(job, snapshot)

    @staticmethod
    def _create(
        provider: Provider, job: Job, inputs: list[ImageBytes], webhook_url: str | None
    ) -> Coroutine[Any, Any, TaskSnapshot]:
        if job.kind is TaskKind.DESCRIBE:
            assert provider.describer is not None
            return provider.describer.describe(inputs[0], webhook_url=webhook_url)
        assert provider.imaginer is not None
        return provider.imaginer.imagine(job.prompt or "", inputs, webhook_url=webhook_url)

    async def _answer_showing_progress(
        self, job: Job, answer: Coroutine[Any, Any, TaskSnapshot]
    ) -> TaskSnapshot:
        """Wait for a synchronous provider's answer, showing "In progress" once it is slow in coming."""
        pending = asyncio.ensure_future(answer)
        try:
            done, _ = await asyncio.wait({pending}, timeout=self._config.progress_after)
            if not done:
                # Shown, not saved: the saved STARTING state is what tells a restart the answer was lost.
                await self._reporter.report(replace(job, state=JobState.IN_PROGRESS))
            return await pending
        except BaseException:
            pending.cancel()
            raise

    def _fallback_for(self, job: Job, fault: Fault) -> str | None:
        if job.kind is not TaskKind.DESCRIBE or fault not in _FALLBACK_FAULTS or job.notice is not None:
            return None
        for name, provider in self._providers.items():
            if name != job.provider and provider.describer is not None and not self._breakers[name].is_open:
                return name
        return None

    # --- waiting for the end ------------------------------------------------------------------

    def _listen(self, job: Job, provider_name: str, task_id: str) -> asyncio.Queue[TaskSnapshot] | None:
        """Route this task's webhook deliveries to its drive (idempotent); None without webhooks."""
        provider = self._providers[provider_name]
        if provider.webhooks is None:
            return None
        key = (provider_name, task_id)
        listening = self._deliveries.get(key)
        if listening is not None:
            return listening[1]
        queue: asyncio.Queue[TaskSnapshot] = asyncio.Queue()
        self._deliveries[key] = (job.kind, queue)
        self._listening[job.id] = key
        early = self._early.pop(key, None)
        if early is not None:
            queue.put_nowait(provider.webhooks.snapshot(job.kind, early[1]))
        if self._relay is not None:
            # Deliveries another process received for this task before this drive listened.
            self._tasks.spawn(self._take_relayed(key), name=f"relayed-{task_id[:12]}")
        return queue

    def _relayed(self, provider_name: str, task_id: str) -> None:
        """Some process left a delivery in the relay: take it if the task is driven here."""
        key = (provider_name, task_id)
        if key in self._deliveries:
            self._tasks.spawn(self._take_relayed(key), name=f"relayed-{task_id[:12]}")

    async def _take_relayed(self, key: tuple[str, str]) -> None:
        assert self._relay is not None
        try:
            bodies = await self._relay.take(*key)
        except (StoreUnavailable, StorageFull) as exc:
            log.warning("could not take a relayed webhook delivery (%s); polling carries on", exc)
            return
        listening = self._deliveries.get(key)
        reader = self._providers[key[0]].webhooks if key[0] in self._providers else None
        if listening is None or reader is None:
            return  # the drive ended meanwhile: its end is known already
        kind, queue = listening
        for body in bodies:
            try:
                queue.put_nowait(reader.snapshot(kind, reader.read_delivery(body)))
            except ProviderError:
                log.warning("a relayed %s delivery had an unexpected shape; ignored", key[0])

    def _stop_listening(self, job_id: str) -> None:
        key = self._listening.pop(job_id, None)
        if key is not None:
            self._deliveries.pop(key, None)

    async def _wait_for_end(self, job: Job, *, poll_now: bool) -> Job | None:
        """Poll (or wait for a webhook) until the task ends, saving each new state; None on shutdown."""
        provider = self._providers[job.provider]
        assert job.provider_task_id is not None
        queue = self._listen(job, job.provider, job.provider_task_id)
        webhooks = self._webhook_url_for(job.provider) is not None
        interval = self._config.webhook_poll_interval if webhooks else self._config.poll_interval
        ceiling = max(interval, self._config.poll_max_interval)
        deadline = job.created_at + self._config.task_timeout
        # A resumed job is polled at once: the task may have finished while the bot was away, and its
        # result beats a timeout.
        while not job.finished:
            remaining = deadline - self._clock()
            if remaining <= 0 and not poll_now:
                return await self._end(job, Fault.TIMEOUT, "not finished within TASK_TIMEOUT_SECONDS")
            snapshot: TaskSnapshot | None = None
            if not poll_now:
                waited = await self._wait_for_delivery(queue, min(interval, remaining))
                if waited is _SHUTDOWN:
                    return None
                snapshot = waited if isinstance(waited, TaskSnapshot) else None
            poll_now = False
            if snapshot is None:
                try:
                    snapshot = await self._poll_once(provider, job)
                except ProviderError as exc:
                    return await self._end(job, exc.fault, exc)
                interval = min(interval * self._config.poll_growth, ceiling)
            if snapshot is not None:
                job = await self._advance(job, snapshot)
        return job

    async def _wait_for_delivery(
        self, queue: asyncio.Queue[TaskSnapshot] | None, timeout: float
    ) -> TaskSnapshot | _Shutdown | None:
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
            return _SHUTDOWN
        for waiter in done:
            result = waiter.result()
            if isinstance(result, TaskSnapshot):
                return result
        return None

    async def _poll_once(self, provider: Provider, job: Job) -> TaskSnapshot | None:
        """Read the task's state; None for a failed poll that says nothing about the task."""
        assert job.provider_task_id is not None
        if provider.poller is None:
            # A synchronous provider's answer came with its request: a job here lost that answer.
            raise ProviderError(provider.name, Fault.NOT_FOUND, "synchronous tasks cannot be polled")
        try:
            return await provider.poller.poll(job.kind, job.provider_task_id)
        except ProviderError as exc:
            if exc.fault in _TRANSIENT_POLL_FAULTS:
                log.info("job %s: poll failed (%s); polling on", job.id, exc.fault)
                return None
            raise

    async def _advance(self, job: Job, snapshot: TaskSnapshot) -> Job:
        """Save a snapshot's state if it is new, then report it; unchanged polls report nothing."""
        state = JobState.following(snapshot.status)
        if state is job.state:
            return job
        if state is JobState.FAILED:
            return await self._end(job, Fault.FAILED)
        if state is JobState.COMPLETED:
            return await self._complete(job, snapshot)
        job = await self._jobs.update(job, state=state)
        await self._reporter.report(job)
        return job

    async def _complete(self, job: Job, snapshot: TaskSnapshot) -> Job:
        """Save a result: the prompt (and cache it), or the generated images fetched while their URLs live."""
        if job.kind is TaskKind.DESCRIBE:
            if not snapshot.prompt:
                return await self._end(job, Fault.BAD_RESULT, "completed without a prompt")
            job = await self._jobs.update(job, state=JobState.COMPLETED, result_text=snapshot.prompt)
            if job.input_hash:
                await self._jobs.cache_prompt(job.input_hash, job.provider, snapshot.prompt)
            return job
        imaginer = self._providers[job.provider].imaginer
        assert imaginer is not None
        try:
            # Provider URLs expire: fetch the images now and keep them with the job.
            fetched = await imaginer.fetch_results(snapshot)
            uploadable = [await _refit(image, RESULT_UPLOAD_LIMITS) for image in fetched.images]
        except ProviderError as exc:
            return await self._end(job, exc.fault, exc)
        return await self._jobs.save_outputs(job, uploadable, state=JobState.COMPLETED)

    # --- the end ------------------------------------------------------------------------------

    async def _end(self, job: Job, fault: Fault, why: ProviderError | str | None = None) -> Job:
        """Save the job as FAILED for `fault`."""
        if why is not None and fault is not Fault.UNAVAILABLE:
            log.info("job %s failed: %s", job.id, why)
        return await self._jobs.update(job, state=JobState.FAILED, fault=fault)

    async def _settle_and_report(self, job: Job) -> None:
        """Spend or give back the reservation (once), show the end, and close the job."""
        if job.usage_id is not None:
            outcome = str(job.fault or job.state)
            if job.state is JobState.COMPLETED or (job.fault is not None and job.fault.member_pays):
                await self._quotas.commit(job.usage_id, outcome=outcome)
            else:
                await self._quotas.refund(job.usage_id, outcome=outcome)
        await self._reporter.report(job)
        job = await self._jobs.finish(job)
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


class _Shutdown:
    """What waiting returns when the runner is shutting down."""


_SHUTDOWN = _Shutdown()


async def _refit(image: ImageBytes, limits: ImageLimits) -> ImageBytes:
    try:
        return await asyncio.to_thread(refit, image, limits)
    except BadInput as exc:  # the bytes passed the checks once: failing now is not the member's doing
        raise ProviderError("bot", Fault.BAD_RESULT, "stored image no longer fits") from exc
