"""The job runner: start a provider task, poll it or wait for its webhook, save and report each new state.

A new job waits in its provider's line (saved) until the provider has room and it is its member's turn;
then it is dispatched. A dispatched job's life is a loop over its saved state: QUEUED is started, STARTING
at a resume is an answer that was lost, CREATED and IN_PROGRESS are waited out; every step returns the job
as it now is, and the end is settled (the quota spent or given back) and reported once. Shutdown pauses a
job in its saved state, and leaves the line as it is; the next start carries both on.

Which jobs this process drives is the store's to say (`JobRepository.claim`): on its own store, every
unfinished one. On a store several processes share, each job is leased to one live process: the runner
renews its leases and looks for jobs whose driver died every third of a lease, takes those over from their
saved state, and stops driving a job the moment its lease is found lost (LeaseLost, or a renewal that no
longer lists it). A webhook delivery for a task driven by another process is left in the store's relay,
and the driver takes it from there. The lines are in the store too: whichever process sees an end (or
renews its leases) moves them on.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bot.core.background import BackgroundTasks
from bot.core.breaker import CircuitBreaker
from bot.core.images import image_hash, refit
from bot.core.moderation import Moderation
from bot.core.polling import InMemoryDurations, PollingConfig, PollPlanner, TaskWatch
from bot.domain.errors import BadInput, LeaseLost, ProviderError, StorageFull, StoreUnavailable
from bot.domain.line import shown_place
from bot.domain.ports import (
    DeliveryRelay,
    JobReporter,
    JobRepository,
    Provider,
    QuotaLedger,
    TaskDurations,
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
# The admin's faults (a refused key, a model the server lacks or that cannot see, a wrong address) qualify too.
_FALLBACK_FAULTS = frozenset(
    {
        Fault.BUSY,
        Fault.UNREACHABLE,
        Fault.UNAVAILABLE,
        Fault.MISCONFIGURED,
        Fault.MODEL_NOT_FOUND,
        Fault.MODEL_BLIND,
        Fault.INCOMPATIBLE,
    }
)
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
    poll_interval: float  # the learned schedule's prior and yardstick (see bot.core.polling)
    poll_max_interval: float  # no wait between two polls is longer
    task_timeout: float
    # A synchronous provider's answer that takes longer than this is shown as "In progress" meanwhile
    # (the reporter's coalescing window: a quicker answer replaces that edit anyway).
    progress_after: float = 1.0
    # With webhooks on, polling is only the safety net for a lost delivery: slow and steady.
    webhook_poll_interval: float = 30.0
    # An end that was not shown (Discord answered 5xx or could not be reached) is offered again after
    # these waits; then the job is left unfinished and shown at the next start.
    end_retry_waits: tuple[float, ...] = (2.0, 10.0, 30.0)
    # Past these, jobs wait in line: tasks running at one provider, and one member's running tasks.
    max_running_per_provider: int = 20
    max_running_per_member: int = 2

    # On a store several processes share: how often this process renews its leases and looks for jobs
    # left by a process that died (a third of the lease, so two renewals can fail before one runs out),
    # and how many jobs it takes over at a time.
    lease_renewal: float = 10.0
    claim_batch: int = 50
    # A describe whose provider is down is tried at another that can answer it; the terminal's describe,
    # which is there to try one provider, turns this off (a fallback would hide that provider's fault).
    fall_back: bool = True

    def polling(self) -> PollingConfig:
        return PollingConfig(first_wait=self.poll_interval, max_wait=self.poll_max_interval)


class Cancelled(enum.Enum):
    """What became of a request to cancel a job."""

    FREE = "free"  # it was waiting in line: ended, and its unit given back
    SPENT = "spent"  # its provider had it: the bot stopped waiting, and the unit stays spent
    NEEDS_CONSENT = "needs_consent"  # its provider has it: cancelling would still cost the unit
    ENDED = "ended"  # it had already ended (or never existed)


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
        moderation: Moderation | None = None,
        relay: DeliveryRelay | None = None,
        clock: Callable[[], float] = time.time,
        durations: TaskDurations | None = None,
    ) -> None:
        self._jobs = jobs
        self._moderation = moderation
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
        # Each driven job as last saved: what a log line or an unexpected end starts from.
        self._current: dict[str, Job] = {}
        self._listening: dict[str, tuple[str, str]] = {}  # job id -> its key in _deliveries
        self._early: dict[tuple[str, str], tuple[float, WebhookDelivery]] = {}
        # Jobs this process stopped driving because another one holds them now, and jobs it paused
        # because the store could not be reached (carried on at the next renewal, on a shared store).
        self._lost: set[str] = set()
        self._paused: set[str] = set()
        self._stopping = asyncio.Event()
        self.accepting = True
        # One dispatcher at a time per provider, so that places are shown from one settled line.
        self._dispatching: dict[str, asyncio.Lock] = {}
        self._shown_places: dict[str, int] = {}  # waiting job id -> the place its message shows
        self._cancelling: set[str] = set()  # jobs whose drive is being stopped by a cancel
        self._moving_lines = 0  # dispatches started by an end and not yet done
        # When to poll each task: learned from how long this provider's tasks took (kept in `durations`).
        self.polling = PollPlanner(durations or InMemoryDurations(), config.polling())

    @property
    def running_count(self) -> int:
        """Jobs driven now, and a line about to move (so that "nothing runs" is never said between them)."""
        return len(self._running) + self._moving_lines

    async def submit(self, job: Job, inputs: Sequence[ImageBytes]) -> Job:
        """Save a new job with its inputs in its provider's line; it starts at once when it is its turn."""
        await self._jobs.create(job, inputs)
        try:
            await self._dispatch(job.provider, fresh={job.id: list(inputs)})
        except StorageFull:
            # The job is saved in line: the next end or start dispatches it.
            log.info("job %s waits in line: the database cannot be written", job.id)
        return job

    async def cancel(self, job_id: str, *, spend: bool) -> Cancelled:
        """Cancel a job: free while it waits in line; once its provider has it, only with `spend`."""
        waiting = await self._jobs.cancel_waiting(job_id)
        if waiting is not None:
            self._shown_places.pop(job_id, None)
            log.info("job %s cancelled while waiting in line", job_id)
            await self._settle_and_report(waiting)
            await self._show_places(waiting.provider)
            return Cancelled.FREE
        drive = self._running.get(job_id)
        current = self._current.get(job_id)
        if drive is not None and current is not None:
            # No await between this check and the cancel: an end already saved is never undone.
            if current.finished:
                return Cancelled.ENDED
            if not spend:
                return Cancelled.NEEDS_CONSENT
            self._stop_as_cancelled(job_id, drive)
            await asyncio.wait({drive})
            return Cancelled.SPENT
        job = await self._jobs.get(job_id)
        if job is None or job.finished:
            return Cancelled.ENDED
        if not spend:
            return Cancelled.NEEDS_CONSENT
        if self._jobs.shared:
            # Driven by another process (or paused here), whose writes this one may not make: its driver
            # finds the request at its next lease renewal, ends the job as CANCELLED and reports it.
            if not await self._jobs.request_cancel(job_id):
                return Cancelled.ENDED
            log.info("job %s: its driver was asked to cancel it", job_id)
            return Cancelled.SPENT
        # Not driven here (it paused when the database was full): end it where it stands.
        await self._settle_and_report(await self._jobs.update(job, state=JobState.CANCELLED))
        return Cancelled.SPENT

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
        await self._dispatch_all()
        return resumed

    async def _claim(self, *, verb: str) -> tuple[int, int]:
        """Start driving the jobs the store hands this process; return how many it handed and how many were new."""
        jobs = await self._jobs.claim(self._config.claim_batch)
        started = 0
        for job in jobs:
            if job.id in self._running or self._stopping.is_set():
                continue
            if job.waiting and job.provider in self._providers:
                continue  # still in line, in its place: dispatched when its turn comes
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
            await self._sleep_unless_stopping(wait)
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
                await self._dispatch_all()  # the lines of a process that died move on here
                await self._cancel_requested()
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

    async def _cancel_requested(self) -> None:
        """Stop the drives whose members asked another process to cancel them, as a Cancel here would."""
        requested = await self._jobs.cancel_requested()
        if not requested:
            return
        await asyncio.sleep(0)  # every drive spawned so far has started (and can end itself as cancelled)
        for job_id in requested:
            task = self._running.get(job_id)
            current = self._current.get(job_id)
            if task is None or task.done() or current is None or current.finished:
                continue  # not driven here, or its end is saved already (never undone)
            log.info("job %s: cancelled by its member through another process", job_id)
            self._stop_as_cancelled(job_id, task)

    def _stop_as_cancelled(self, job_id: str, drive: asyncio.Task[None]) -> None:
        """Stop a drive so that it ends its job as CANCELLED (a shutdown or a lost lease only stops it)."""
        self._cancelling.add(job_id)
        drive.cancel()

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
        await self.polling.save(everything=True)
        if self._relay is not None:
            await self._relay.close()
        if self._jobs.shared:
            try:
                await self._jobs.release()
            except (StoreUnavailable, StorageFull) as exc:
                log.warning("could not give back the job leases (%s); they run out by themselves", exc)

    # --- the line -----------------------------------------------------------------------------

    async def _dispatch(self, provider: str, *, fresh: Mapping[str, list[ImageBytes]] | None = None) -> None:
        """Start the jobs whose turn it is while the provider has room, then show the rest their places.

        `fresh` holds the inputs of jobs submitted just now, which then need not be read back.
        """
        lock = self._dispatching.setdefault(provider, asyncio.Lock())
        async with lock:
            while self.accepting and not self._stopping.is_set():
                job = await self._jobs.next_in_line(
                    provider,
                    max_running=self._config.max_running_per_provider,
                    max_running_per_member=self._config.max_running_per_member,
                )
                if job is None:
                    break
                self._shown_places.pop(job.id, None)
                self._spawn(job, inputs=(fresh or {}).get(job.id))
            await self._show_places(provider)

    async def _dispatch_all(self) -> None:
        # A member's running tasks count at every provider: an end anywhere may let a job start elsewhere.
        for provider in self._providers:
            await self._dispatch(provider)

    async def _show_places(self, provider: str) -> None:
        """Report each waiting job whose shown place changed (places are rounded far back in the line)."""
        if not self.accepting:
            return
        for job in await self._jobs.line(provider):
            assert job.place is not None
            shown = shown_place(job.place)
            if self._shown_places.get(job.id) != shown:
                self._shown_places[job.id] = shown
                await self._reporter.report(replace(job, place=shown))

    def _after_end(self) -> None:
        """Let the line move on once a drive ends (not while shutting down: the line waits for the next start)."""
        if self.accepting and not self._stopping.is_set():
            self._moving_lines += 1
            task = self._tasks.spawn(self._dispatch_quietly(), name="dispatch")
            task.add_done_callback(self._line_moved)

    def _line_moved(self, _: asyncio.Task[None]) -> None:
        self._moving_lines -= 1

    async def _dispatch_quietly(self) -> None:
        try:
            await self._dispatch_all()
        except (StorageFull, StoreUnavailable):
            log.info("the line waits: the database cannot be written")

    # --- driving one job --------------------------------------------------------------------

    def _spawn(self, job: Job, *, resumed: bool = False, inputs: list[ImageBytes] | None = None) -> None:
        # Known as driven from this moment (before the task first runs): a cancel finds it here.
        self._current[job.id] = job
        task = self._tasks.spawn(self._drive(job, resumed=resumed, inputs=inputs), name=f"job-{job.id[:12]}")
        self._running[job.id] = task
        task.add_done_callback(lambda _: self._drive_done(job.id))

    def _drive_done(self, job_id: str) -> None:
        self._running.pop(job_id, None)
        self._cancelling.discard(job_id)
        self._after_end()

    async def _drive(self, job: Job, *, resumed: bool, inputs: list[ImageBytes] | None) -> None:
        try:
            try:
                ended = await self._run(job, resumed=resumed, inputs=inputs)
            except asyncio.CancelledError:
                if job.id in self._lost:
                    self._lost.discard(job.id)
                    await self._reporter.forget(job.id)
                    return
                if job.id not in self._cancelling:
                    raise
                # Cancelled by its member: stop waiting for the provider; what it answers later is not shown.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                log.info("job %s cancelled at %s", job.id, job.provider)
                ended = await self._save(self._current[job.id], state=JobState.CANCELLED)
            except (LeaseLost, StorageFull, StoreUnavailable):
                raise
            except Exception:
                log.exception("job %s broke unexpectedly", job.id)
                ended = await self._end(self._current[job.id], Fault.BAD_RESULT, against_provider=False)
            finally:
                self._stop_listening(job.id)
            if ended is None:
                await self._reporter.forget(job.id)
                log.info("job %s paused for shutdown in state %s", job.id, self._current[job.id].state)
                return
            await self._settle_and_report(ended)
            # What this job taught the poll schedule is written in batches, or at once when nothing else runs.
            await self.polling.save(everything=len(self._running) <= 1)
        except LeaseLost:
            # Another process claimed the job (this one's lease ran out): it carries the job on from its
            # saved state, and nothing more is written or shown from here.
            await self._reporter.forget(job.id)
            log.warning("job %s: another process drives it now; stopping here", job.id)
        except (StorageFull, StoreUnavailable) as exc:
            # Nothing more can be saved (the database logged why): the job keeps its last saved state
            # and carries on from it at the next start (on a shared store, once the database answers);
            # settling is once only.
            await self._reporter.forget(job.id)
            self._paused.add(job.id)
            log.info(
                "job %s paused in state %s: the database cannot be written (%s)",
                job.id,
                self._current[job.id].state,
                exc,
            )
        finally:
            self._current.pop(job.id, None)

    async def _save(self, job: Job, **changes: Any) -> Job:
        """Save some of a job's fields, and remember the job as it now is."""
        job = await self._jobs.update(job, **changes)
        self._current[job.id] = job
        return job

    async def _run(self, job: Job, *, resumed: bool, inputs: list[ImageBytes] | None) -> Job | None:
        """Move the job from its saved state to its end; None when shutdown paused it."""
        if not job.finished and job.provider not in self._providers:
            # Its provider was taken out of the settings since the job was saved: nothing can carry it on.
            log.warning("job %s needs %s, which is no longer configured; it ends here", job.id, job.provider)
            return await self._end(job, Fault.MISCONFIGURED, against_provider=False)
        while not job.finished:
            step: Job | None
            if job.state is JobState.QUEUED:
                step = await self._start(job, inputs)
            elif job.state is JobState.STARTING:
                # The create went out and its answer was never saved: the task may exist, but it cannot
                # be found (no idempotency key), and sending it again might pay twice.
                step = await self._end(
                    job, Fault.LOST, "the bot stopped while creating the task", against_provider=False
                )
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
        if inputs is None:
            # A resumed job: its inputs are only in the database, as prepared for the provider it had then
            # (a fallback may have changed it since): fit them to its provider now.
            limits = self._providers[job.provider].image_limits
            inputs = [await _refit(image, limits) for image in await self._jobs.images(job.id, "input")]
        try:
            return await self._start_with(job, job.provider, inputs)
        except ProviderError as exc:
            alternative = self._fallback_for(job, exc.fault)
            if alternative is None:
                return await self._end(job, exc.fault, exc, against_provider=False)
            log.warning(
                "job %s: %s unavailable (%s); falling back to %s",
                job.id,
                job.provider,
                exc.fault,
                alternative,
            )
        notice = Notice(NoticeCode.FALLBACK, {"failed": job.provider, "used": alternative})
        try:
            limits = self._providers[alternative].image_limits
            refitted = [await _refit(image, limits) for image in inputs]
        except ProviderError as exc:
            return await self._end(job, exc.fault, exc, against_provider=False)
        # The cache key follows the bytes the new provider is sent.
        digest = image_hash(refitted[0]) if job.input_hash and refitted else job.input_hash
        job = await self._save(
            job, provider=alternative, notice=notice, state=JobState.QUEUED, input_hash=digest
        )
        if job.usage_id is not None:
            await self._quotas.move(job.usage_id, alternative)
        try:
            return await self._start_with(job, alternative, refitted)
        except ProviderError as exc:
            return await self._end(job, exc.fault, exc, against_provider=False)

    async def _start_with(self, job: Job, provider_name: str, inputs: list[ImageBytes]) -> Job:
        """Create the provider task (raising ProviderError when nothing came of it) and save its first state."""
        provider = self._providers[provider_name]
        breaker = self._breakers[provider_name]
        breaker.check()
        # Saved before the request: a crash mid-create is then known as such at the next start.
        job = await self._save(job, state=JobState.STARTING)
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
                await self._save(job, state=JobState.QUEUED)
            raise
        breaker.record_answer()
        if snapshot.status is not ProviderStatus.COMPLETED and snapshot.status is not ProviderStatus.FAILED:
            # Listen before saving: a delivery may follow the create answer within milliseconds.
            self._listen(job, provider_name, snapshot.task_id)
        job = await self._save(job, provider_task_id=snapshot.task_id, started_at=self._clock())
        if job.usage_id is not None:
            await self._quotas.record_task_id(job.usage_id, snapshot.task_id)
        return await self._advance(job, snapshot)

    @staticmethod
    def _create(
        provider: Provider, job: Job, inputs: list[ImageBytes], webhook_url: str | None
    ) -> Coroutine[Any, Any, TaskSnapshot]:
        if job.kind is TaskKind.DESCRIBE:
            assert provider.describer is not None
            return provider.describer.describe(inputs[0], job.describe_request, webhook_url=webhook_url)
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
        if not self._config.fall_back:
            return None
        if job.kind is not TaskKind.DESCRIBE or fault not in _FALLBACK_FAULTS or job.notice is not None:
            return None
        for name, provider in self._providers.items():
            if (
                name != job.provider
                and provider.can_describe(job.describe_request)
                and not self._breakers[name].is_open
            ):
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
        # Time spent in line does not count: the timeout is the provider's, from when the job left the line.
        deadline = (job.dispatched_at or job.created_at) + self._config.task_timeout
        # A resumed job is polled at once: the task may have finished while the bot was away, and its
        # result beats a timeout. How long it took is then unknown, so it teaches the schedule nothing.
        watch = await self.polling.watch(
            job.provider, job.kind, started_at=job.started_at or job.created_at, learn=not poll_now
        )
        try:
            while not job.finished:
                remaining = deadline - self._clock()
                if remaining <= 0 and not poll_now:
                    return await self._end(job, Fault.TIMEOUT, "not finished within TASK_TIMEOUT_SECONDS")
                snapshot: TaskSnapshot | None = None
                delivered = False
                chance = 1.0
                if not poll_now:
                    wait, chance = self._next_poll(job, watch)
                    waited = await self._wait_for_delivery(queue, min(wait, remaining))
                    if waited is _SHUTDOWN:
                        return None
                    if isinstance(waited, TaskSnapshot):
                        snapshot, delivered = waited, True
                poll_now = False
                if snapshot is None:
                    try:
                        snapshot = await self._poll_once(provider, job, watch, chance)
                    except ProviderError as exc:
                        return await self._end(job, exc.fault, exc)
                if snapshot is not None:
                    self._observe(watch, snapshot, delivered=delivered)
                    job = await self._advance(job, snapshot)
        finally:
            watch.close()
        return job

    def _next_poll(self, job: Job, watch: TaskWatch) -> tuple[float, float]:
        """Return (seconds until the next poll, the chance it finds the end) for a task not yet ended."""
        if self._webhook_url_for(job.provider) is not None:
            # The end comes by webhook: polling is only the safety net for a lost delivery.
            return self._config.webhook_poll_interval, 0.0
        return watch.next_look(self._clock())

    def _observe(self, watch: TaskWatch, snapshot: TaskSnapshot, *, delivered: bool) -> None:
        """Tell the task's poll schedule what a poll (or a webhook delivery) found."""
        if snapshot.status in (ProviderStatus.COMPLETED, ProviderStatus.FAILED):
            watch.ended(self._clock(), at_once=delivered)
        else:
            watch.running(self._clock())

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

    async def _poll_once(
        self, provider: Provider, job: Job, watch: TaskWatch, chance: float
    ) -> TaskSnapshot | None:
        """Read the task's state; None for a failed poll that says nothing about the task."""
        assert job.provider_task_id is not None
        if provider.poller is None:
            # A synchronous provider's answer came with its request: a job here lost that answer.
            raise ProviderError(provider.name, Fault.NOT_FOUND, "synchronous tasks cannot be polled")
        try:
            return await provider.poller.poll(job.kind, job.provider_task_id, chance=chance)
        except ProviderError as exc:
            if exc.fault in _TRANSIENT_POLL_FAULTS:
                log.info("job %s: poll failed (%s); polling on", job.id, exc.fault)
                watch.failed(self._clock(), exc.retry_after)  # a 429 or a 503 backs off
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
        job = await self._save(job, state=state)
        await self._reporter.report(job)
        return job

    async def _complete(self, job: Job, snapshot: TaskSnapshot) -> Job:
        """Save a result: the prompt (and cache it), or the generated images fetched while their URLs live."""
        if job.kind is TaskKind.DESCRIBE:
            if not snapshot.suggestions:
                return await self._end(job, Fault.BAD_RESULT, "completed without a prompt")
            # A prompt with a word the server blocks is shown behind a spoiler, not withheld.
            hidden = self._moderation is not None and await self._moderation.hides_any(
                job.guild_id, snapshot.suggestions
            )
            job = await self._save(
                job, state=JobState.COMPLETED, suggestions=snapshot.suggestions, hidden=hidden
            )
            self._breakers[job.provider].record_success()
            if job.input_hash:
                variant = self._providers[job.provider].cache_variant(job.describe_request)
                await self._jobs.cache_suggestions(
                    job.input_hash, job.provider, variant, snapshot.suggestions
                )
            return job
        imaginer = self._providers[job.provider].imaginer
        assert imaginer is not None
        try:
            # Provider URLs expire: fetch the images now and keep them with the job.
            fetched = await imaginer.fetch_results(snapshot)
            uploadable = [await _refit(image, RESULT_UPLOAD_LIMITS) for image in fetched.images]
        except ProviderError as exc:
            return await self._end(job, exc.fault, exc)
        job = await self._jobs.save_outputs(job, uploadable, state=JobState.COMPLETED)
        self._current[job.id] = job
        self._breakers[job.provider].record_success()
        return job

    # --- the end ------------------------------------------------------------------------------

    async def _end(
        self, job: Job, fault: Fault, why: ProviderError | str | None = None, *, against_provider: bool = True
    ) -> Job:
        """Save the job as FAILED for `fault`; a fault of the provider's counts against it (the breaker)
        unless the breaker already knows (a create it refused) or it was not the provider's doing."""
        if why is not None and fault is not Fault.UNAVAILABLE:
            log.info("job %s failed: %s", job.id, why)
        if against_provider and job.provider in self._breakers:
            self._breakers[job.provider].record_failure(fault)
        return await self._save(job, state=JobState.FAILED, fault=fault)

    async def _settle_and_report(self, job: Job) -> None:
        """Spend or give back the reservation (once), show the end, and close the job once it is shown."""
        if job.usage_id is not None:
            outcome = str(job.fault or job.state)
            if job.charged:
                await self._quotas.commit(job.usage_id, outcome=outcome)
            else:
                await self._quotas.refund(job.usage_id, outcome=outcome)
        if not await self._show_end(job):
            log.warning(
                "job %s: Discord did not take its end; it is shown at the next start (nothing is charged twice)",
                job.id,
            )
            return
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

    async def _show_end(self, job: Job) -> bool:
        """Report the end, offering it again a few times while Discord does not take it."""
        for wait in (*self._config.end_retry_waits, None):
            if await self._reporter.report(job):
                return True
            if wait is None or self._stopping.is_set():
                return False
            await self._sleep_unless_stopping(wait)
        return False

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        """Wait `seconds`, or less when shutdown starts meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

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
