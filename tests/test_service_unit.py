"""The real TaskService and JobRunner over in-memory ports: providers chosen, the cache, refusals, reruns.

Images are checked, normalised and hashed by Pillow for real (`check_bytes`, `prepare_for_provider`);
storage, the ledger, the reporter and the providers are the in-memory ones of `tests/memory.py`.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from PIL import Image

from bot.core.breaker import CircuitBreaker
from bot.core.images import CheckedImage, image_hash
from bot.core.moderation import Moderation
from bot.core.runner import JobRunner, RunnerConfig
from bot.core.safe_download import SafeDownloader
from bot.core.service import MAX_PROMPT_LENGTH, ServiceConfig, TaskService
from bot.domain.errors import BadInput, QuotaExceeded, Refusal, ShuttingDown, StorageFull
from bot.domain.ports import Provider
from bot.domain.quota import Member
from bot.domain.tasks import ImageBytes, ImageLimits, Job, JobState, Notice, NoticeCode, Route, TaskKind
from tests.conftest import png_bytes
from tests.memory import (
    Clock,
    FakeDescriber,
    FakeImaginer,
    FakePoller,
    Journal,
    MemoryJobRepository,
    MemoryQuotaLedger,
    MemoryRules,
    RecordingReporter,
    make_provider,
    snapshot,
)

MEMBER = Member(guild_id=10, user_id=20, role_ids=(30,))
ROUTE = Route(channel_id=40, application_id=50, interaction_token="token", token_created_at=0.0)
MAX_IMAGE_BYTES = 2_000_000
RESULT = ImageBytes(png_bytes((64, 48), (0, 120, 200)), "image/png")
# The image provider takes small references, so a reference made from a result is refitted for it.
GAMMA_LIMITS = ImageLimits(max_side=32, max_bytes=200_000)


@dataclass
class Rig:
    clock: Clock
    journal: Journal
    jobs: MemoryJobRepository
    quotas: MemoryQuotaLedger
    reporter: RecordingReporter
    runner: JobRunner
    service: TaskService
    downloader: SafeDownloader
    alpha: FakeDescriber  # polled describer, the default
    beta: FakeDescriber  # synchronous describer
    gamma: FakeImaginer  # the only imaginer
    rules: MemoryRules

    async def checked(self, colour: tuple[int, int, int] = (200, 30, 30)) -> CheckedImage:
        return await self.service.check_bytes(png_bytes(colour=colour))


RigFactory = Callable[..., Rig]


@pytest.fixture
async def make_rig() -> AsyncIterator[RigFactory]:
    made: list[Rig] = []

    def make(
        *,
        default: str | None = "alpha",
        cache_days: int = 7,
        with_describers: bool = True,
        with_imaginer: bool = True,
    ) -> Rig:
        clock = Clock()
        journal = Journal()
        jobs = MemoryJobRepository(clock=clock, journal=journal)
        quotas = MemoryQuotaLedger(clock=clock, jobs=jobs)
        reporter = RecordingReporter(journal=journal)
        rules = MemoryRules()
        moderation = Moderation(rules)
        alpha = FakeDescriber(snapshot("t-1", "CREATED"))
        beta = FakeDescriber(snapshot("s-1", "COMPLETED", prompt="described by beta"))
        gamma = FakeImaginer(snapshot("g-1", "CREATED"), results=[RESULT])
        providers: list[Provider] = []
        if with_describers:
            providers += [
                make_provider(
                    "alpha",
                    describer=alpha,
                    poller=FakePoller(snapshot("t-1", "COMPLETED", prompt="described by alpha")),
                ),
                make_provider("beta", describer=beta),
            ]
        if with_imaginer:
            poller = FakePoller(snapshot("g-1", "COMPLETED", image_urls=["https://cdn.example/g-1.png"]))
            providers.append(make_provider("gamma", imaginer=gamma, poller=poller, limits=GAMMA_LIMITS))
        by_name = {p.name: p for p in providers}
        runner = JobRunner(
            jobs=jobs,
            quotas=quotas,
            providers=by_name,
            breakers={name: CircuitBreaker(name, clock=clock) for name in by_name},
            reporter=reporter,
            config=RunnerConfig(poll_interval=0, poll_max_interval=0, task_timeout=600, progress_after=60),
            moderation=moderation,
            clock=clock,
        )
        downloader = SafeDownloader(max_bytes=MAX_IMAGE_BYTES)
        service = TaskService(
            config=ServiceConfig(
                max_image_bytes=MAX_IMAGE_BYTES,
                describe_cache_days=cache_days,
                default_describe_provider=default,
            ),
            jobs=jobs,
            quotas=quotas,
            runner=runner,
            providers=by_name,
            downloader=downloader,
            moderation=moderation,
            clock=clock,
        )
        rig = Rig(
            clock, journal, jobs, quotas, reporter, runner, service, downloader, alpha, beta, gamma, rules
        )
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.runner.shutdown(grace=1.0)
        await rig.downloader.close()


def refusal_of(error: pytest.ExceptionInfo[BadInput]) -> tuple[Refusal, dict[str, str | int]]:
    return error.value.refusal, error.value.params


# --- which provider --------------------------------------------------------------------------------------


async def test_describe_provider_is_the_default_or_the_one_asked_for(make_rig: RigFactory) -> None:
    rig = make_rig()
    assert rig.service.describe_provider(None) == "alpha"
    assert rig.service.describe_provider("beta") == "beta"
    for unusable in ("delta", "gamma"):  # not configured; configured but it cannot describe
        with pytest.raises(BadInput) as refused:
            rig.service.describe_provider(unusable)
        assert refusal_of(refused) == (
            Refusal.PROVIDER_NOT_CONFIGURED,
            {"provider": unusable, "default": "alpha"},
        )


async def test_describe_provider_without_a_default(make_rig: RigFactory) -> None:
    rig = make_rig(default=None)
    with pytest.raises(BadInput) as refused:
        rig.service.describe_provider(None)
    assert refusal_of(refused) == (Refusal.NO_PROVIDER_FOR_KIND, {"kind": "describe"})
    with pytest.raises(BadInput) as refused:
        rig.service.describe_provider("delta")
    assert refusal_of(refused) == (Refusal.PROVIDER_NOT_CONFIGURED, {"provider": "delta", "default": ""})


async def test_imagine_provider_is_the_first_that_can_imagine_or_none(make_rig: RigFactory) -> None:
    assert make_rig().service.imagine_provider() == "gamma"
    rig = make_rig(with_imaginer=False)
    with pytest.raises(BadInput) as refused:
        rig.service.imagine_provider()
    assert refusal_of(refused) == (Refusal.NO_PROVIDER_FOR_KIND, {"kind": "imagine"})
    with pytest.raises(BadInput):
        await rig.service.imagine(MEMBER, "a cat", [], ROUTE)
    assert rig.quotas.rows() == []


# --- input ------------------------------------------------------------------------------------------------


async def test_check_bytes_proves_an_image_or_refuses_it(make_rig: RigFactory) -> None:
    rig = make_rig()
    checked = await rig.checked()
    assert (checked.format, checked.width, checked.height) == ("PNG", 64, 48)
    with pytest.raises(BadInput) as refused:
        await rig.service.check_bytes(b"just some text, not a picture\n")
    assert refused.value.refusal is Refusal.IMAGE_NOT_AN_IMAGE
    with pytest.raises(BadInput) as refused:
        await rig.service.check_bytes(b"\x89PNG" + bytes(MAX_IMAGE_BYTES))
    assert refusal_of(refused) == (Refusal.IMAGE_TOO_LARGE, {"max_bytes": MAX_IMAGE_BYTES})


# --- describe ------------------------------------------------------------------------------------------------


async def test_describe_reserves_and_submits_the_normalised_image(make_rig: RigFactory) -> None:
    rig = make_rig()
    job = await rig.service.describe(MEMBER, await rig.checked(), "alpha", ROUTE)

    assert (job.kind, job.provider, job.state, job.route) == (
        TaskKind.DESCRIBE,
        "alpha",
        JobState.QUEUED,
        ROUTE,
    )
    assert (job.guild_id, job.user_id, job.created_at) == (MEMBER.guild_id, MEMBER.user_id, rig.clock.now)
    done = await rig.jobs.wait_finished(job.id)
    assert (done.state, done.result_text) == (JobState.COMPLETED, "described by alpha")
    (sent,) = await rig.jobs.images(job.id, "input")
    assert rig.alpha.calls[0].image == sent  # what was saved is what the provider got
    assert job.input_hash == image_hash(sent)
    assert sent.mime == "image/jpeg"  # an opaque picture is re-encoded, metadata stripped
    assert rig.quotas.states() == ["committed"]
    assert rig.quotas.row(job.usage_id or 0).provider == "alpha"


async def test_a_describe_answered_from_the_cache_costs_nothing_and_is_shown_at_once(
    make_rig: RigFactory,
) -> None:
    rig = make_rig()
    first = await rig.service.describe(MEMBER, await rig.checked(), "alpha", ROUTE)
    await rig.jobs.wait_finished(first.id)

    again = await rig.service.describe(MEMBER, await rig.checked(), "alpha", ROUTE)

    # Already shown and closed when describe returns: no reservation, no provider call.
    assert rig.reporter.states(again.id) == [JobState.COMPLETED]
    assert (again.state, again.result_text) == (JobState.COMPLETED, "described by alpha")
    assert again.notice == Notice(NoticeCode.CACHED)
    assert again.usage_id is None
    assert again.input_hash == first.input_hash
    assert rig.journal.of(again.id) == ["saved COMPLETED", "reported COMPLETED", "finished"]
    saved = rig.jobs.saved(again.id)
    assert saved.finished_at is not None
    assert saved.route.interaction_token is None
    assert len(rig.alpha.calls) == 1
    assert rig.quotas.states() == ["committed", "cached"]
    assert [line.cached for line in (await rig.quotas.usage_report(MEMBER.guild_id, 1)).lines] == [1]
    assert (await rig.quotas.status(MEMBER))[0].used == 1  # the cached answer is free

    # The cache is per provider: another provider describes the same image for real.
    other = await rig.service.describe(MEMBER, await rig.checked(), "beta", ROUTE)
    assert other.notice is None
    await rig.jobs.wait_finished(other.id)
    assert len(rig.beta.calls) == 1


async def test_without_a_cache_every_describe_is_a_task(make_rig: RigFactory) -> None:
    rig = make_rig(cache_days=0)
    for _ in range(2):
        job = await rig.service.describe(MEMBER, await rig.checked(), "alpha", ROUTE)
        await rig.jobs.wait_finished(job.id)
    assert len(rig.alpha.calls) == 2
    assert rig.quotas.states() == ["committed", "committed"]


async def test_a_member_without_quota_is_refused_before_anything_is_saved(make_rig: RigFactory) -> None:
    rig = make_rig()
    await rig.quotas.set_limit(MEMBER.guild_id, "role", 30, TaskKind.DESCRIBE, 0, actor_id=1)
    with pytest.raises(QuotaExceeded):
        await rig.service.describe(MEMBER, await rig.checked(), "alpha", ROUTE)
    assert rig.jobs.all() == []
    assert rig.alpha.calls == []


# --- imagine ----------------------------------------------------------------------------------------------


async def test_four_references_are_refused_before_any_reservation(make_rig: RigFactory) -> None:
    rig = make_rig()
    checked = await rig.checked()
    with pytest.raises(BadInput) as refused:
        await rig.service.imagine(MEMBER, "a collage", [checked] * 4, ROUTE)
    assert refusal_of(refused) == (Refusal.TOO_MANY_REFERENCES, {"count": 4})
    assert rig.quotas.rows() == []
    assert rig.jobs.all() == []
    assert rig.gamma.calls == []


async def test_an_empty_prompt_is_refused_and_a_long_one_cut(make_rig: RigFactory) -> None:
    rig = make_rig()
    with pytest.raises(BadInput) as refused:
        await rig.service.imagine(MEMBER, " \n\t ", [], ROUTE)
    assert refusal_of(refused) == (Refusal.EMPTY_PROMPT, {})
    assert rig.quotas.rows() == []

    job = await rig.service.imagine(MEMBER, "  " + "x" * (MAX_PROMPT_LENGTH + 50), [], ROUTE)
    assert job.prompt == "x" * MAX_PROMPT_LENGTH
    await rig.jobs.wait_finished(job.id)
    assert rig.gamma.calls[0].prompt == job.prompt


async def test_a_stopping_runner_takes_no_new_tasks(make_rig: RigFactory) -> None:
    rig = make_rig()
    checked = await rig.checked()
    await rig.runner.shutdown(grace=1.0)
    with pytest.raises(ShuttingDown):
        await rig.service.describe(MEMBER, checked, "alpha", ROUTE)
    with pytest.raises(ShuttingDown):
        await rig.service.imagine(MEMBER, "a cat", [], ROUTE)
    assert rig.quotas.rows() == []
    assert rig.jobs.all() == []


@pytest.mark.parametrize("kind", [TaskKind.DESCRIBE, TaskKind.IMAGINE])
async def test_a_submit_that_fails_gives_the_reservation_back(make_rig: RigFactory, kind: TaskKind) -> None:
    rig = make_rig()
    checked = await rig.checked()
    rig.jobs.fail("create", StorageFull("database or disk is full"))
    submit = (
        rig.service.describe(MEMBER, checked, "alpha", ROUTE)
        if kind is TaskKind.DESCRIBE
        else rig.service.imagine(MEMBER, "a cat", [checked], ROUTE)
    )
    with pytest.raises(StorageFull):
        await submit
    assert rig.quotas.settles == [("refund", 1, "NOT_STARTED", True)]
    assert rig.quotas.states() == ["refunded"]
    assert rig.jobs.all() == []
    assert rig.alpha.calls == []
    assert rig.gamma.calls == []


# --- jobs named by buttons -------------------------------------------------------------------------------


async def test_finished_job_is_only_a_completed_job_of_the_kind_asked_for(make_rig: RigFactory) -> None:
    rig = make_rig()
    described = await rig.service.describe(MEMBER, await rig.checked(), "alpha", ROUTE)
    await rig.jobs.wait_finished(described.id)

    found = await rig.service.finished_job(described.id, TaskKind.DESCRIBE)
    assert (found.id, found.state) == (described.id, JobState.COMPLETED)

    unfinished = Job.new(
        kind=TaskKind.IMAGINE, provider="gamma", guild_id=1, user_id=2, route=ROUTE, clock=rig.clock
    )
    await rig.jobs.create(unfinished)
    for job_id, kind in [
        (described.id, TaskKind.IMAGINE),  # another kind: a hand-made custom id
        (unfinished.id, TaskKind.IMAGINE),  # not completed
        ("0" * 32, TaskKind.DESCRIBE),  # pruned, or never was
    ]:
        with pytest.raises(BadInput) as refused:
            await rig.service.finished_job(job_id, kind)
        assert refusal_of(refused) == (Refusal.JOB_GONE, {})


async def test_rerun_sends_the_same_prompt_and_stored_references(make_rig: RigFactory) -> None:
    rig = make_rig()
    references = [await rig.checked((255, 0, 0)), await rig.checked((0, 255, 0))]
    first = await rig.service.imagine(MEMBER, "a red and a green square", references, ROUTE)
    await rig.jobs.wait_finished(first.id)

    again = await rig.service.rerun(rig.jobs.saved(first.id), MEMBER, ROUTE)
    await rig.jobs.wait_finished(again.id)

    assert again.id != first.id
    assert again.prompt == first.prompt == "a red and a green square"
    stored = await rig.jobs.images(first.id, "input")
    assert len(stored) == 2
    assert await rig.jobs.images(again.id, "input") == stored
    assert [call.references for call in rig.gamma.calls] == [tuple(stored), tuple(stored)]
    assert rig.quotas.states() == ["committed", "committed"]


async def test_edit_result_uses_the_generated_image_refitted_as_the_reference(make_rig: RigFactory) -> None:
    rig = make_rig()
    first = await rig.service.imagine(MEMBER, "a blue square", [], ROUTE)
    await rig.jobs.wait_finished(first.id)
    assert await rig.jobs.images(first.id, "output") == [RESULT]

    edit = await rig.service.edit_result(rig.jobs.saved(first.id), MEMBER, "  make it round  ", ROUTE)
    await rig.jobs.wait_finished(edit.id)

    call = rig.gamma.calls[-1]
    assert call.prompt == "make it round"
    (reference,) = call.references
    with Image.open(io.BytesIO(reference.data)) as image:
        assert max(image.size) <= GAMMA_LIMITS.max_side  # the 64 px result, fitted to the provider
    assert await rig.jobs.images(edit.id, "input") == [reference]
    assert rig.quotas.states() == ["committed", "committed"]

    # A job with no generated image (a description) has nothing to edit.
    described = await rig.service.describe(MEMBER, await rig.checked(), "beta", ROUTE)
    await rig.jobs.wait_finished(described.id)
    with pytest.raises(BadInput) as refused:
        await rig.service.edit_result(rig.jobs.saved(described.id), MEMBER, "make it round", ROUTE)
    assert refusal_of(refused) == (Refusal.JOB_GONE, {})
