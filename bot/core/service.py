"""What a member can ask for, from checked input to a running job: shared by commands, menus and buttons."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from bot.core.images import CheckedImage, check_image, image_hash, prepare_for_provider, refit
from bot.core.moderation import Moderation
from bot.core.runner import Cancelled, JobRunner
from bot.core.safe_download import SafeDownloader
from bot.domain.errors import BadInput, Refusal, ShuttingDown
from bot.domain.ports import JobRepository, Provider, QuotaLedger
from bot.domain.privacy import Forgotten
from bot.domain.quota import Member
from bot.domain.tasks import (
    MAX_SUGGESTIONS,
    DescribeRequest,
    ImageBytes,
    Job,
    JobState,
    Notice,
    NoticeCode,
    Route,
    TaskKind,
)

log = logging.getLogger(__name__)

MAX_REFERENCES = 3
MAX_PROMPT_LENGTH = 2000


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    max_image_bytes: int
    describe_cache_days: int  # 0: no cache
    default_describe_provider: str | None


class TaskService:
    """Turn a member's checked input into a job: pick the provider, use the cache, reserve, submit."""

    def __init__(
        self,
        *,
        config: ServiceConfig,
        jobs: JobRepository,
        quotas: QuotaLedger,
        runner: JobRunner,
        providers: Mapping[str, Provider],
        downloader: SafeDownloader,
        moderation: Moderation,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._moderation = moderation
        self._jobs = jobs
        self._quotas = quotas
        self._runner = runner
        self._providers = providers
        self._downloader = downloader
        self._clock = clock

    @property
    def max_image_bytes(self) -> int:
        return self._config.max_image_bytes

    # --- input ----------------------------------------------------------------------------------

    async def check_bytes(self, data: bytes) -> CheckedImage:
        """Check image bytes off the event loop (decoding is CPU work)."""
        return await asyncio.to_thread(check_image, data, max_bytes=self._config.max_image_bytes)

    async def fetch_url(self, url: str) -> CheckedImage:
        """Download a member's URL through the guarded downloader, then check it."""
        return await self.check_bytes(await self._downloader.fetch(url))

    def describe_provider(self, requested: str | None, request: DescribeRequest | None = None) -> str:
        """Return the provider to describe with, or explain why none of those asked for can.

        Without a provider asked for, the default is used when it can answer the request, else the first
        configured one that can (a style, several suggestions).
        """
        request = request or DescribeRequest()
        if not 1 <= request.count <= MAX_SUGGESTIONS:
            raise BadInput(Refusal.TOO_MANY_SUGGESTIONS, most=MAX_SUGGESTIONS)
        default = self._config.default_describe_provider
        if requested is not None:
            provider = self._providers.get(requested)
            if provider is None or provider.describer is None:
                raise BadInput(Refusal.PROVIDER_NOT_CONFIGURED, provider=requested, default=default or "")
            if not provider.can_describe(request):
                raise self._cannot_answer(requested, request)
            return requested
        if default is None:
            raise BadInput(Refusal.NO_PROVIDER_FOR_KIND, kind=TaskKind.DESCRIBE.value)
        if self._providers[default].can_describe(request):
            return default
        capable = self._capable_of(request)
        if capable is None:
            raise self._cannot_answer(default, request)
        return capable

    def _capable_of(self, request: DescribeRequest) -> str | None:
        return next(
            (name for name, provider in self._providers.items() if provider.can_describe(request)), None
        )

    def _cannot_answer(self, provider: str, request: DescribeRequest) -> BadInput:
        """Say that this provider gives one detailed prompt only, and which one here gives more."""
        capable = self._capable_of(request)
        if capable is None:
            return BadInput(Refusal.NO_PROVIDER_FOR_STYLES, provider=provider)
        return BadInput(Refusal.STYLE_NEEDS_OTHER_PROVIDER, provider=provider, capable=capable)

    def imagine_provider(self) -> str:
        for name, provider in self._providers.items():
            if provider.imaginer is not None:
                return name
        raise BadInput(Refusal.NO_PROVIDER_FOR_KIND, kind=TaskKind.IMAGINE.value)

    # --- tasks ----------------------------------------------------------------------------------

    async def describe(
        self,
        member: Member,
        image: CheckedImage,
        provider_name: str,
        route: Route,
        request: DescribeRequest | None = None,
    ) -> Job:
        """Describe an image: from the cache when this provider saw it lately, else as a new task."""
        self._check_accepting()
        spoiler = await self._moderation.admit(member.guild_id, TaskKind.DESCRIBE, route)
        request = request or DescribeRequest()
        provider = self._providers[provider_name]
        prepared = await asyncio.to_thread(prepare_for_provider, image, provider.image_limits)
        digest = image_hash(prepared)
        asked = {
            "input_hash": digest,
            "style": request.style,
            "suggestions_asked": request.count,
            "spoiler": spoiler,
        }
        variant = provider.cache_variant(request)
        cached = await self._jobs.cached_suggestions(
            digest, provider_name, variant, self._config.describe_cache_days
        )
        if cached is not None:
            await self._quotas.record_cached(member, TaskKind.DESCRIBE, provider_name)
            job = self._new_job(member, TaskKind.DESCRIBE, provider_name, route, **asked)
            hidden = await self._moderation.hides_any(member.guild_id, cached)
            job = replace(
                job,
                state=JobState.COMPLETED,
                suggestions=cached,
                notice=Notice(NoticeCode.CACHED),
                hidden=hidden,
            )
            return await self._runner.finish_cached(job, [prepared])
        reservation = await self._quotas.reserve(member, TaskKind.DESCRIBE, provider_name)
        job = self._new_job(
            member, TaskKind.DESCRIBE, provider_name, route, usage_id=reservation.usage_id, **asked
        )
        return await self._submit(job, [prepared])

    async def imagine(
        self,
        member: Member,
        prompt: str,
        references: Sequence[CheckedImage | ImageBytes],
        route: Route,
        *,
        notice: Notice | None = None,
    ) -> Job:
        """Generate (no references) or edit and compose (one to three references) an image."""
        self._check_accepting()
        prompt = self.clean_prompt(prompt)
        if len(references) > MAX_REFERENCES:
            raise BadInput(Refusal.TOO_MANY_REFERENCES, count=len(references))
        provider_name = self.imagine_provider()
        # The server's rules come before any quota or provider is touched.
        spoiler = await self._moderation.admit(member.guild_id, TaskKind.IMAGINE, route)
        await self._moderation.check_prompt(member.guild_id, prompt)
        limits = self._providers[provider_name].image_limits
        prepared = [
            ref if isinstance(ref, ImageBytes) else await asyncio.to_thread(prepare_for_provider, ref, limits)
            for ref in references
        ]
        reservation = await self._quotas.reserve(member, TaskKind.IMAGINE, provider_name)
        job = self._new_job(
            member,
            TaskKind.IMAGINE,
            provider_name,
            route,
            usage_id=reservation.usage_id,
            prompt=prompt,
            notice=notice,
            spoiler=spoiler,
        )
        return await self._submit(job, prepared)

    async def rerun(self, job: Job, member: Member, route: Route) -> Job:
        """Run an imagine job again with the same prompt and references."""
        references = await self._jobs.images(job.id, "input")
        return await self.imagine(member, job.prompt or "", references, route)

    async def edit_result(self, job: Job, member: Member, prompt: str, route: Route) -> Job:
        """Run a new imagine with a finished job's generated image as the reference."""
        outputs = await self._jobs.images(job.id, "output")
        if not outputs:
            raise BadInput(Refusal.JOB_GONE)
        limits = self._providers[self.imagine_provider()].image_limits
        reference = await asyncio.to_thread(refit, outputs[0], limits)
        return await self.imagine(member, prompt, [reference], route)

    async def finished_job(self, job_id: str, kind: TaskKind) -> Job:
        """Return the completed job a button names; a job of another kind is as good as gone."""
        job = await self._jobs.get(job_id)
        # Only a hand-made custom id names a job of another kind: each action sits under its own kind.
        if job is None or job.state is not JobState.COMPLETED or job.kind is not kind:
            raise BadInput(Refusal.JOB_GONE)
        return job

    async def cancel(
        self, job_id: str, member: Member, *, may_manage: bool, spend: bool
    ) -> tuple[Cancelled, Job]:
        """Cancel a member's queued or running task (or any, for a member who may manage messages).

        Without `spend`, a task its provider already has is left running and NEEDS_CONSENT comes back:
        cancelling it then still costs the unit, and the member is asked first.
        """
        job = await self._jobs.get(job_id)
        if job is None:
            raise BadInput(Refusal.ALREADY_ENDED)
        if job.guild_id != member.guild_id or (job.user_id != member.user_id and not may_manage):
            raise BadInput(Refusal.NOT_YOURS_TO_CANCEL)
        outcome = await self._runner.cancel(job_id, spend=spend)
        if outcome is Cancelled.ENDED:
            raise BadInput(Refusal.ALREADY_ENDED)
        return outcome, job

    async def forget(self, member: Member) -> Forgotten:
        """Delete what the bot keeps about the member in this server; today's use stays counted."""
        if not member.guild_id:
            raise BadInput(Refusal.SERVERS_ONLY)
        tasks, images, prompts = await self._jobs.forget_member(member.guild_id, member.user_id)
        usage = await self._quotas.forget_member(member.guild_id, member.user_id)
        log.info("a member asked to be forgotten", extra={"guild_id": member.guild_id})
        return Forgotten(tasks=tasks, images=images, prompts=prompts, usage=usage)

    @staticmethod
    def clean_prompt(prompt: str) -> str:
        prompt = prompt.strip()
        if not prompt:
            raise BadInput(Refusal.EMPTY_PROMPT)
        return prompt[:MAX_PROMPT_LENGTH]

    def _check_accepting(self) -> None:
        if not self._runner.accepting:
            raise ShuttingDown

    def _new_job(self, member: Member, kind: TaskKind, provider: str, route: Route, **extra: object) -> Job:
        return Job.new(
            kind=kind,
            provider=provider,
            guild_id=member.guild_id,
            user_id=member.user_id,
            route=route,
            clock=self._clock,
            **extra,
        )

    async def _submit(self, job: Job, inputs: list[ImageBytes]) -> Job:
        try:
            return await self._runner.submit(job, inputs)
        except BaseException:
            # The job never started: the member keeps the task they reserved.
            if job.usage_id is not None:
                await self._quotas.refund(job.usage_id, outcome="NOT_STARTED")
            raise
