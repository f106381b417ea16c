"""What a member can ask for, from checked input to a running job: shared by commands, menus and buttons."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from bot.errors import BadInput, BotError
from bot.images import CheckedImage, check_image, image_hash, prepare_for_provider, refit
from bot.interactions import ReportTarget
from bot.jobs import JobRunner
from bot.providers.base import InputImage, Provider, TaskKind, TaskState
from bot.safe_download import SafeDownloader
from bot.settings import Settings
from bot.store.jobs import Job, JobStore
from bot.store.quotas import Member, QuotaStore
from bot.ui import text

log = logging.getLogger(__name__)

MAX_REFERENCES = 3
MAX_PROMPT_LENGTH = 2000


class TaskService:
    """Turn a member's checked input into a job: pick the provider, use the cache, reserve, submit."""

    def __init__(
        self,
        *,
        settings: Settings,
        jobs: JobStore,
        quotas: QuotaStore,
        runner: JobRunner,
        providers: Mapping[str, Provider],
        downloader: SafeDownloader,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._jobs = jobs
        self._quotas = quotas
        self._runner = runner
        self._providers = providers
        self._downloader = downloader
        self._clock = clock

    # --- input ----------------------------------------------------------------------------------

    async def check_bytes(self, data: bytes) -> CheckedImage:
        """Check image bytes off the event loop (decoding is CPU work)."""
        return await asyncio.to_thread(check_image, data, max_bytes=self._settings.max_image_bytes)

    async def fetch_url(self, url: str) -> CheckedImage:
        """Download a member's URL through the guarded downloader, then check it."""
        return await self.check_bytes(await self._downloader.fetch(url))

    def describe_provider(self, requested: str | None) -> str:
        """Return the provider to describe with, or explain why the requested one cannot be used."""
        default = self._settings.default_describe_provider
        if requested is None:
            if default is None:
                raise BadInput(text.NO_PROVIDER_FOR_KIND.format(what="image to prompt"))
            return default
        provider = self._providers.get(requested)
        if provider is None or TaskKind.DESCRIBE not in provider.kinds:
            raise BadInput(
                text.PROVIDER_NOT_CONFIGURED.format(
                    name=text.provider_name(requested), default=text.provider_name(default or "")
                )
            )
        return requested

    def imagine_provider(self) -> str:
        for name, provider in self._providers.items():
            if TaskKind.IMAGINE in provider.kinds:
                return name
        raise BadInput(text.NO_PROVIDER_FOR_KIND.format(what="image generation"))

    # --- tasks ----------------------------------------------------------------------------------

    async def describe(
        self, member: Member, image: CheckedImage, provider_name: str, target: ReportTarget
    ) -> Job:
        """Describe an image: from the cache when this provider saw it lately, else as a new task."""
        self._check_accepting()
        provider = self._providers[provider_name]
        prepared = await asyncio.to_thread(prepare_for_provider, image, provider.image_limits)
        digest = image_hash(prepared)
        cached = await self._jobs.cached_prompt(digest, provider_name, self._settings.describe_cache_days)
        if cached is not None:
            await self._quotas.record_cached(member, TaskKind.DESCRIBE, provider_name)
            job = self._new_job(member, TaskKind.DESCRIBE, provider_name, target, input_hash=digest)
            job = replace(job, state=TaskState.COMPLETED, result_text=cached, notice=text.CACHED_NOTICE)
            return await self._runner.finish_cached(job, [prepared])
        reservation = await self._quotas.reserve(member, TaskKind.DESCRIBE, provider_name)
        job = self._new_job(
            member, TaskKind.DESCRIBE, provider_name, target, usage_id=reservation.usage_id, input_hash=digest
        )
        return await self._submit(job, [prepared])

    async def imagine(
        self,
        member: Member,
        prompt: str,
        references: Sequence[CheckedImage | InputImage],
        target: ReportTarget,
        *,
        notice: str | None = None,
    ) -> Job:
        """Generate (no references) or edit and compose (one to three references) an image."""
        self._check_accepting()
        prompt = self.clean_prompt(prompt)
        if len(references) > MAX_REFERENCES:
            raise BadInput(text.MORE_IMAGES_NOTICE.format(count=len(references)))
        provider_name = self.imagine_provider()
        limits = self._providers[provider_name].image_limits
        prepared = [
            ref if isinstance(ref, InputImage) else await asyncio.to_thread(prepare_for_provider, ref, limits)
            for ref in references
        ]
        reservation = await self._quotas.reserve(member, TaskKind.IMAGINE, provider_name)
        job = self._new_job(
            member,
            TaskKind.IMAGINE,
            provider_name,
            target,
            usage_id=reservation.usage_id,
            prompt=prompt,
            notice=notice,
        )
        return await self._submit(job, prepared)

    async def rerun(self, job: Job, member: Member, target: ReportTarget) -> Job:
        """Run an imagine job again with the same prompt and references."""
        references = await self._jobs.images(job.id, "input")
        return await self.imagine(member, job.prompt or "", references, target)

    async def edit_result(self, job: Job, member: Member, prompt: str, target: ReportTarget) -> Job:
        """Run a new imagine with a finished job's generated image as the reference."""
        outputs = await self._jobs.images(job.id, "output")
        if not outputs:
            raise BadInput(text.JOB_GONE)
        limits = self._providers[self.imagine_provider()].image_limits
        reference = await asyncio.to_thread(refit, outputs[0], limits)
        return await self.imagine(member, prompt, [reference], target)

    async def job(self, job_id: str) -> Job:
        job = await self._jobs.get(job_id)
        if job is None or job.state is not TaskState.COMPLETED:
            raise BadInput(text.JOB_GONE)
        return job

    @staticmethod
    def clean_prompt(prompt: str) -> str:
        prompt = prompt.strip()
        if not prompt:
            raise BadInput(text.EMPTY_PROMPT)
        return prompt[:MAX_PROMPT_LENGTH]

    def _check_accepting(self) -> None:
        if not self._runner.accepting:
            raise BotError(text.SHUTTING_DOWN)

    def _new_job(
        self, member: Member, kind: TaskKind, provider: str, target: ReportTarget, **extra: object
    ) -> Job:
        fields = target.job_fields() | extra
        return Job.new(
            kind=kind,
            provider=provider,
            guild_id=member.guild_id,
            user_id=member.user_id,
            clock=self._clock,
            **fields,
        )

    async def _submit(self, job: Job, inputs: list[InputImage]) -> Job:
        try:
            return await self._runner.submit(job, inputs)
        except BaseException:
            # The job never started: the member keeps the task they reserved.
            if job.usage_id is not None:
                await self._quotas.refund(job.usage_id, outcome="NOT_STARTED")
            raise
