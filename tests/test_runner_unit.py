"""The real JobRunner over in-memory ports: every state saved before it is shown, every end settled once.

No SQLite, no HTTP, no wall-clock waits: polls are immediate (interval 0) or far off (an hour, only ever
cut short by a delivery or a shutdown), the task timeout is reached by moving an injected clock, and the
tests wait on the memory ports' events with timeouts as upper bounds only.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.core.breaker import CircuitBreaker
from bot.core.images import image_hash
from bot.core.runner import Cancelled, JobRunner, RunnerConfig
from bot.domain.errors import LineFull, ProviderError, QuotaExceeded, StorageFull
from bot.domain.ports import (
    Describer,
    Imaginer,
    JobReporter,
    JobRepository,
    KeyChecker,
    Provider,
    QuotaLedger,
    TaskPoller,
    WebhookReader,
)
from bot.domain.quota import LedgerSettings, Member
from bot.domain.tasks import (
    Fault,
    ImageBytes,
    ImageLimits,
    Job,
    JobState,
    Notice,
    NoticeCode,
    Route,
    Suggestion,
    TaskKind,
)
from tests.conftest import png_bytes
from tests.memory import (
    DEFAULT_LIMITS,
    Clock,
    DescribeCall,
    FakeDescriber,
    FakeImaginer,
    FakeKeyChecker,
    FakePoller,
    FakeWebhookReader,
    Journal,
    MemoryJobRepository,
    MemoryQuotaLedger,
    RecordingReporter,
    SharedMemoryJobRepository,
    Step,
    make_provider,
    snapshot,
    webhook_body,
)

MEMBER = Member(guild_id=10, user_id=20)
IMAGE = ImageBytes(png_bytes(), "image/png")
ROUTE = Route(channel_id=30, application_id=40, interaction_token="token", token_created_at=0.0)
WEBHOOK_URL = "https://bot.example/webhooks/alpha"
# Polls at once and without end: a script or a moving clock decides when a task ends.
FAST = RunnerConfig(
    poll_interval=0, poll_max_interval=0, task_timeout=600, progress_after=60, end_retry_waits=(0, 0, 0)
)
# Polls an hour apart: a test that needs one must get it from a resume, a delivery or a shutdown.
SLOW = RunnerConfig(
    poll_interval=3600,
    poll_max_interval=3600,
    task_timeout=7200,
    progress_after=60,
    webhook_poll_interval=3600,
    end_retry_waits=(0, 0, 0),
)


@dataclass
class Rig:
    clock: Clock
    journal: Journal
    jobs: MemoryJobRepository
    quotas: MemoryQuotaLedger
    reporter: RecordingReporter
    breakers: dict[str, CircuitBreaker]
    runner: JobRunner

    async def job(
        self,
        provider: str = "alpha",
        kind: TaskKind = TaskKind.DESCRIBE,
        *,
        prompt: str | None = None,
    ) -> Job:
        """A job as the service makes one: its reservation held, its input hashed."""
        reservation = await self.quotas.reserve(MEMBER, kind, provider)
        return Job.new(
            kind=kind,
            provider=provider,
            guild_id=MEMBER.guild_id,
            user_id=MEMBER.user_id,
            route=ROUTE,
            clock=self.clock,
            usage_id=reservation.usage_id,
            input_hash="hash-of-the-input" if kind is TaskKind.DESCRIBE else None,
            prompt=prompt,
        )

    async def run(self, job: Job, inputs: Sequence[ImageBytes] = (IMAGE,)) -> Job:
        """Submit a job and wait until its end was reported and the job closed; return it as saved."""
        await self.runner.submit(job, inputs)
        return await self.jobs.wait_finished(job.id)


RigFactory = Callable[..., Rig]


@pytest.fixture
async def make_rig() -> AsyncIterator[RigFactory]:
    made: list[Rig] = []

    def make(
        *providers: Provider,
        config: RunnerConfig = FAST,
        webhooks: bool = False,
        breaker_threshold: int = 5,
        shared: bool = False,
    ) -> Rig:
        clock = Clock()
        journal = Journal()
        store = SharedMemoryJobRepository if shared else MemoryJobRepository
        jobs = store(clock=clock, journal=journal)
        quotas = MemoryQuotaLedger(clock=clock, jobs=jobs)
        reporter = RecordingReporter(journal=journal)
        breakers = {
            p.name: CircuitBreaker(p.name, threshold=breaker_threshold, cooldown=60, clock=clock)
            for p in providers
        }

        def webhook_url_for(name: str) -> str | None:
            return f"https://bot.example/webhooks/{name}" if webhooks else None

        runner = JobRunner(
            jobs=jobs,
            quotas=quotas,
            providers={p.name: p for p in providers},
            breakers=breakers,
            reporter=reporter,
            config=config,
            webhook_url_for=webhook_url_for,
            clock=clock,
        )
        rig = Rig(clock, journal, jobs, quotas, reporter, breakers, runner)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.runner.shutdown(grace=1.0)


def polled(
    name: str = "alpha", *create: Step, polls: Sequence[Step] = (), webhooks: bool = False
) -> tuple[Provider, FakeDescriber, FakePoller]:
    """A describer with a poller (like Freepik): `create` answers the creates, `polls` the polls."""
    describer = FakeDescriber(*(create or (snapshot("t-1", "CREATED"),)))
    poller = FakePoller(*(polls or (snapshot("t-1", "IN_PROGRESS"),)))
    reader = FakeWebhookReader(name) if webhooks else None
    return make_provider(name, describer=describer, poller=poller, webhooks=reader), describer, poller


def synchronous(
    name: str = "beta", *answers: Step, limits: ImageLimits = DEFAULT_LIMITS
) -> tuple[Provider, FakeDescriber]:
    """A describer without a poller (like Novita): its answer is the end."""
    describer = FakeDescriber(*(answers or (snapshot("s-1", "COMPLETED", prompt=f"described by {name}"),)))
    return make_provider(name, describer=describer, limits=limits), describer


# --- the memory ports are the ports --------------------------------------------------------------------


def _members(protocol: type) -> dict[str, Any]:
    return {name: value for name, value in vars(protocol).items() if not name.startswith("_")}


def _parameters(function: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


PORTS: list[tuple[type, Callable[[], object]]] = [
    (JobRepository, MemoryJobRepository),
    (QuotaLedger, MemoryQuotaLedger),
    (JobReporter, RecordingReporter),
    (Describer, lambda: FakeDescriber(snapshot("t", "CREATED"))),
    (Imaginer, lambda: FakeImaginer(snapshot("t", "CREATED"))),
    (TaskPoller, lambda: FakePoller(snapshot("t", "CREATED"))),
    (WebhookReader, lambda: FakeWebhookReader("alpha")),
    (KeyChecker, FakeKeyChecker),
]


@pytest.mark.parametrize(("protocol", "make"), PORTS, ids=[p.__name__ for p, _ in PORTS])
def test_each_memory_class_has_every_member_of_its_protocol(
    protocol: type, make: Callable[[], object]
) -> None:
    implementation = make()
    members = _members(protocol)
    assert members, protocol
    for name, member in members.items():
        ours = inspect.getattr_static(implementation, name)
        if isinstance(member, property):
            assert isinstance(ours, property), name
            getattr(implementation, name)
            continue
        assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(member), name
        assert _parameters(ours) == _parameters(member), name


def test_the_memory_classes_type_check_as_the_ports() -> None:
    """Checked statically by mypy (these annotations), and at run time by the parametrised test above."""
    jobs: JobRepository = MemoryJobRepository()
    quotas: QuotaLedger = MemoryQuotaLedger()
    reporter: JobReporter = RecordingReporter()
    describer: Describer = FakeDescriber(snapshot("t", "CREATED"))
    imaginer: Imaginer = FakeImaginer(snapshot("t", "CREATED"))
    poller: TaskPoller = FakePoller(snapshot("t", "CREATED"))
    reader: WebhookReader = FakeWebhookReader("alpha")
    checker: KeyChecker = FakeKeyChecker()
    assert all((jobs, quotas, reporter, describer, imaginer, poller, reader, checker))


async def test_the_memory_repository_shares_nothing_with_its_callers() -> None:
    clock = Clock()
    jobs = MemoryJobRepository(clock=clock)
    params: dict[str, str | int] = {"failed": "alpha", "used": "beta"}
    job = Job.new(
        kind=TaskKind.DESCRIBE,
        provider="beta",
        guild_id=1,
        user_id=2,
        route=ROUTE,
        clock=clock,
        notice=Notice(NoticeCode.FALLBACK, params),
    )
    await jobs.create(job, [IMAGE])
    params["used"] = "changed by the caller"
    read = await jobs.get(job.id)
    assert read is not None
    assert read.notice == Notice(NoticeCode.FALLBACK, {"failed": "alpha", "used": "beta"})
    assert read.notice is not None
    assert isinstance(read.notice.params, dict)
    read.notice.params["used"] = "changed again"  # a copy: changing it changes nothing saved
    assert jobs.saved(job.id).notice == Notice(NoticeCode.FALLBACK, {"failed": "alpha", "used": "beta"})

    # A write changes only the fields it names: the route saved by the reporter survives a runner's write
    # made with a job that still carries the old route.
    moved = replace(ROUTE, via="channel", message_id=99)
    await jobs.save_route(job.id, moved)
    clock.advance(5)
    returned = await jobs.update(job, state=JobState.STARTING)
    assert returned.route == ROUTE  # the caller's job, changed as asked
    assert returned.updated_at == clock.now
    assert jobs.saved(job.id).route == moved
    assert jobs.saved(job.id).state is JobState.STARTING
    with pytest.raises(ValueError, match="save_route"):
        await jobs.update(job, route=moved)


async def test_the_memory_ledger_limits_caps_and_settles_once() -> None:
    clock = Clock()
    quotas = MemoryQuotaLedger(clock=clock, max_inflight_per_provider=2, max_queue_per_provider=1)
    await quotas.set_limit(MEMBER.guild_id, "user", MEMBER.user_id, TaskKind.DESCRIBE, 2, actor_id=1)
    first = await quotas.reserve(MEMBER, TaskKind.DESCRIBE, "alpha")
    second = await quotas.reserve(MEMBER, TaskKind.DESCRIBE, "alpha")
    with pytest.raises(QuotaExceeded):
        await quotas.reserve(MEMBER, TaskKind.DESCRIBE, "alpha")
    await quotas.reserve(MEMBER, TaskKind.IMAGINE, "alpha")  # another kind: it waits in line
    with pytest.raises(LineFull) as full:
        await quotas.reserve(MEMBER, TaskKind.IMAGINE, "alpha")  # two running, one waiting: full
    assert (full.value.provider, full.value.waiting) == ("alpha", 1)

    assert await quotas.commit(first.usage_id) is True
    assert await quotas.commit(first.usage_id) is False
    assert await quotas.refund(first.usage_id, outcome="failed") is False
    assert await quotas.refund(second.usage_id, outcome="failed") is True
    assert quotas.states() == ["committed", "refunded", "reserved"]
    (describe, imagine) = await quotas.status(MEMBER)
    assert (describe.limit, describe.used, describe.source) == (2, 1, "user")
    assert (imagine.limit, imagine.used, imagine.source) == (10, 1, "default")


async def _ledger_scenario(quotas: QuotaLedger, jobs: JobRepository, clock: Clock) -> list[object]:
    """Drive a ledger through every method; return everything it answered."""
    alice, bob = Member(10, 1, role_ids=(30,)), Member(10, 2)
    seen: list[object] = []
    await quotas.set_limit(10, "server", 10, TaskKind.DESCRIBE, 3, actor_id=99)
    await quotas.set_limit(10, "role", 30, TaskKind.DESCRIBE, 5, actor_id=99)
    await quotas.set_limit(10, "user", 2, TaskKind.IMAGINE, -1, actor_id=99)
    first = await quotas.reserve(alice, TaskKind.DESCRIBE, "alpha")
    seen += [await quotas.commit(first.usage_id), await quotas.commit(first.usage_id)]
    second = await quotas.reserve(alice, TaskKind.DESCRIBE, "alpha")
    seen += [await quotas.refund(second.usage_id, outcome="failed"), await quotas.commit(second.usage_id)]
    third = await quotas.reserve(alice, TaskKind.DESCRIBE, "alpha")
    await quotas.move(third.usage_id, "beta")
    await quotas.record_task_id(third.usage_id, "t-3")
    held = Job.new(kind=TaskKind.DESCRIBE, provider="beta", guild_id=10, user_id=1, route=ROUTE, clock=clock)
    await jobs.create(replace(held, usage_id=third.usage_id))  # an unfinished job holds the third
    await quotas.record_cached(alice, TaskKind.DESCRIBE, "alpha")
    await quotas.grant(10, 1, TaskKind.DESCRIBE, 2, actor_id=99)
    seen += [await quotas.status(alice), await quotas.status(bob)]
    await quotas.reserve(bob, TaskKind.IMAGINE, "gamma")
    await quotas.reserve(alice, TaskKind.IMAGINE, "gamma")
    await quotas.reserve(bob, TaskKind.IMAGINE, "gamma")
    for member in (alice, Member(10, 3), bob):  # gamma runs three and lets one wait: the third is refused
        try:
            await quotas.reserve(member, TaskKind.IMAGINE, "gamma")
        except LineFull as exc:
            seen.append(("line full", exc.provider, exc.waiting))
    seen.append(await quotas.reset_today(10, 1, None, actor_id=99))
    seen.append(await quotas.status(alice))
    report = await quotas.usage_report(10, 1)
    seen += [report.since, report.until, report.lines, report.top_members, report.rows]
    clock.advance(3601)
    seen += [await quotas.expire(), await quotas.status(alice), await quotas.status(bob)]
    clock.advance(40 * 86400)
    seen.append(await quotas.prune(30))
    seen.append((await quotas.usage_report(10, 60)).rows)
    return seen


async def test_the_memory_ledger_answers_as_the_sqlite_ledger_does(tmp_path: Path) -> None:
    from bot.store.sqlite.database import Database
    from bot.store.sqlite.jobs import SqliteJobRepository
    from bot.store.sqlite.quotas import SqliteQuotaLedger

    settings = LedgerSettings(
        defaults={TaskKind.DESCRIBE: 4, TaskKind.IMAGINE: 2},
        max_inflight_per_provider=3,
        max_queue_per_provider=1,
        reservation_ttl=3600.0,
    )
    memory_clock = Clock()
    memory_jobs = MemoryJobRepository(clock=memory_clock)
    memory = MemoryQuotaLedger(clock=memory_clock, jobs=memory_jobs, **settings)
    db = await Database.open(tmp_path / "parity.sqlite3")
    try:
        sqlite_clock = Clock()
        sqlite = SqliteQuotaLedger(db, clock=sqlite_clock, **settings)
        expected = await _ledger_scenario(sqlite, SqliteJobRepository(db, clock=sqlite_clock), sqlite_clock)
    finally:
        await db.close()
    assert await _ledger_scenario(memory, memory_jobs, memory_clock) == expected


async def _jobs_scenario(jobs: JobRepository, clock: Clock) -> list[object]:
    """Drive a job repository through every method; return everything it answered."""
    seen: list[object] = []
    first = replace(
        Job.new(kind=TaskKind.DESCRIBE, provider="alpha", guild_id=1, user_id=2, route=ROUTE, clock=clock),
        id="a" * 32,
        input_hash="hash-a",
        notice=Notice(NoticeCode.FALLBACK, {"failed": "beta", "used": "alpha"}),
    )
    clock.advance(1)
    second = replace(
        Job.new(kind=TaskKind.IMAGINE, provider="gamma", guild_id=1, user_id=2, route=ROUTE, clock=clock),
        id="b" * 32,
        prompt="a cat",
    )
    await jobs.create(first, [IMAGE])
    await jobs.create(second)
    clock.advance(1)
    seen.append(await jobs.update(first, state=JobState.STARTING))
    seen.append(await jobs.update(first, state=JobState.CREATED, provider_task_id="t-1", started_at=clock()))
    moved = replace(ROUTE, via="channel", message_id=77)
    await jobs.save_route(first.id, moved)
    clock.advance(1)
    seen.append(await jobs.update(first, reported_state=JobState.CREATED))  # a stale job: the route stays
    seen.append(await jobs.find_by_task("alpha", "t-1"))
    seen.append(await jobs.find_by_task("beta", "t-1"))
    result = ImageBytes(png_bytes(colour=(5, 5, 5)), "image/png")
    seen.append(await jobs.save_outputs(second, [result], state=JobState.COMPLETED))
    seen += [await jobs.images(first.id, "input"), await jobs.images(second.id, "output")]
    seen += [await jobs.images(second.id, "input"), await jobs.images("unknown", "input")]
    await jobs.cache_suggestions("hash-a", "alpha", PLAIN, (Suggestion("a red square"),))
    clock.advance(86400)
    await jobs.cache_suggestions("hash-b", "alpha", PLAIN, (Suggestion("a blue square"),))
    seen += [prompt_of(await jobs.cached_suggestions("hash-a", "alpha", PLAIN, days)) for days in (0, 1, 2)]
    seen += [
        prompt_of(await jobs.cached_suggestions("hash-a", "beta", PLAIN, 2)),
        prompt_of(await jobs.cached_suggestions("hash-b", "alpha", PLAIN, 1)),
    ]
    seen.append(await jobs.finish(second))
    seen.append(await jobs.unfinished())
    seen += [await jobs.get(first.id), await jobs.get(second.id), await jobs.get("unknown")]
    clock.advance(10 * 86400)
    await jobs.cache_suggestions("hash-c", "alpha", PLAIN, (Suggestion("kept"),))
    seen.append(await jobs.prune(5))
    seen += [await jobs.get(second.id), await jobs.images(second.id, "output"), await jobs.unfinished()]
    seen += [
        prompt_of(await jobs.cached_suggestions(h, "alpha", PLAIN, 30))
        for h in ("hash-a", "hash-b", "hash-c")
    ]
    return seen


# The describe cache's key besides the image and the provider, for one detailed prompt of a provider
# without a model of its own (what every describe in these tests asks).
PLAIN = "|detailed|1"


def prompt_of(cached: tuple[Suggestion, ...] | None) -> str | None:
    return cached[0].prompt if cached else None


async def test_the_memory_repository_answers_as_the_sqlite_one_does(tmp_path: Path) -> None:
    from bot.store.sqlite.database import Database
    from bot.store.sqlite.jobs import SqliteJobRepository

    memory_clock = Clock()
    db = await Database.open(tmp_path / "parity.sqlite3")
    try:
        sqlite_clock = Clock()
        expected = await _jobs_scenario(SqliteJobRepository(db, clock=sqlite_clock), sqlite_clock)
    finally:
        await db.close()
    assert await _jobs_scenario(MemoryJobRepository(clock=memory_clock), memory_clock) == expected


# --- one describe, polled --------------------------------------------------------------------------------


async def test_a_polled_describe_saves_each_state_before_showing_it_once(make_rig: RigFactory) -> None:
    provider, describer, poller = polled(
        "alpha",
        snapshot("t-1", "CREATED"),
        polls=[
            snapshot("t-1", "CREATED"),  # unchanged: neither saved nor shown
            snapshot("t-1", "IN_PROGRESS"),
            snapshot("t-1", "IN_PROGRESS"),  # unchanged
            snapshot("t-1", "COMPLETED", prompt="a red square"),
        ],
    )
    rig = make_rig(provider)
    job = await rig.job()

    done = await rig.run(job)

    assert rig.journal.of(job.id) == [
        "saved QUEUED",
        "saved STARTING",
        "saved CREATED",
        "reported CREATED",
        "saved IN_PROGRESS",
        "reported IN_PROGRESS",
        "saved COMPLETED",
        "reported COMPLETED",
        "finished",
    ]
    assert rig.reporter.states(job.id) == [JobState.CREATED, JobState.IN_PROGRESS, JobState.COMPLETED]
    assert describer.calls == [DescribeCall(IMAGE, None)]  # no webhooks: no URL
    assert poller.calls == [(TaskKind.DESCRIBE, "t-1")] * 4
    assert done.state is JobState.COMPLETED
    assert done.fault is None
    assert done.result_text == "a red square"
    assert done.provider_task_id == "t-1"
    assert done.started_at == rig.clock.now
    assert done.finished_at is not None
    assert done.route.interaction_token is None  # the token is dropped once the end is shown
    assert job.usage_id is not None
    assert rig.quotas.settles == [("commit", job.usage_id, "COMPLETED", True)]
    row = rig.quotas.row(job.usage_id)
    assert (row.state, row.provider, row.provider_task_id) == ("committed", "alpha", "t-1")
    assert (
        prompt_of(await rig.jobs.cached_suggestions("hash-of-the-input", "alpha", PLAIN, 1)) == "a red square"
    )
    assert not rig.breakers["alpha"].is_open


async def test_a_failed_task_is_refunded_and_not_cached(make_rig: RigFactory) -> None:
    provider, _, _ = polled("alpha", polls=[snapshot("t-1", "FAILED")])
    rig = make_rig(provider)
    job = await rig.job()

    done = await rig.run(job)

    assert (done.state, done.fault) == (JobState.FAILED, Fault.FAILED)
    assert rig.journal.of(job.id, "saved", "reported")[-3:] == [
        "reported CREATED",
        "saved FAILED",
        "reported FAILED",
    ]
    assert rig.quotas.settles == [("refund", job.usage_id, "failed", True)]
    assert rig.quotas.states() == ["refunded"]
    assert prompt_of(await rig.jobs.cached_suggestions("hash-of-the-input", "alpha", PLAIN, 1)) is None


async def test_a_completed_describe_without_a_prompt_is_a_bad_result(make_rig: RigFactory) -> None:
    provider, _, _ = polled("alpha", polls=[snapshot("t-1", "COMPLETED", prompt="")])
    rig = make_rig(provider)
    done = await rig.run(await rig.job())
    assert (done.state, done.fault) == (JobState.FAILED, Fault.BAD_RESULT)
    assert rig.quotas.states() == ["refunded"]


# --- faults at create -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [Fault.BUSY, Fault.UNREACHABLE, Fault.MISCONFIGURED])
async def test_a_create_that_came_to_nothing_is_refunded(make_rig: RigFactory, fault: Fault) -> None:
    provider, describer, poller = polled("alpha", ProviderError("alpha", fault))
    rig = make_rig(provider)  # nothing to fall back to
    job = await rig.job()

    done = await rig.run(job)

    assert (done.state, done.fault) == (JobState.FAILED, fault)
    # Nothing was created: the job went back to QUEUED before it ended.
    assert rig.journal.of(job.id) == [
        "saved QUEUED",
        "saved STARTING",
        "saved QUEUED",
        "saved FAILED",
        "reported FAILED",
        "finished",
    ]
    assert len(describer.calls) == 1
    assert poller.calls == []
    assert rig.quotas.settles == [("refund", job.usage_id, fault.value, True)]


@pytest.mark.parametrize("fault", [Fault.BUSY, Fault.UNREACHABLE, Fault.MISCONFIGURED])
async def test_describe_falls_back_to_the_next_describer_and_says_so(
    make_rig: RigFactory, fault: Fault
) -> None:
    alpha, alpha_describer, _ = polled("alpha", ProviderError("alpha", fault))
    # The second provider takes smaller images: the input is refitted for it.
    beta, beta_describer = synchronous("beta", limits=ImageLimits(max_side=32, max_bytes=100_000))
    rig = make_rig(alpha, beta)
    job = await rig.job("alpha")

    done = await rig.run(job)

    assert (done.state, done.provider, done.result_text) == (JobState.COMPLETED, "beta", "described by beta")
    assert done.notice == Notice(NoticeCode.FALLBACK, {"failed": "alpha", "used": "beta"})
    assert rig.journal.of(job.id) == [
        "saved QUEUED",
        "saved STARTING",
        "saved QUEUED",  # alpha created nothing
        "saved QUEUED",  # moved to beta, with the notice
        "saved STARTING",
        "saved COMPLETED",
        "reported COMPLETED",
        "finished",
    ]
    assert len(alpha_describer.calls) == 1
    assert len(beta_describer.calls) == 1
    with Image.open(io.BytesIO(beta_describer.calls[0].image.data)) as sent:
        assert max(sent.size) <= 32
    row = rig.quotas.row(job.usage_id or 0)
    assert (row.provider, row.state) == ("beta", "committed")
    assert rig.quotas.settles == [("commit", job.usage_id, "COMPLETED", True)]
    # Cached under the bytes the second provider was sent (refitted to its limits), not the first's.
    assert prompt_of(await rig.jobs.cached_suggestions("hash-of-the-input", "beta", PLAIN, 1)) is None
    refitted = beta_describer.calls[0].image
    assert rig.jobs.saved(job.id).input_hash == image_hash(refitted)
    assert (
        prompt_of(await rig.jobs.cached_suggestions(image_hash(refitted), "beta", PLAIN, 1))
        == "described by beta"
    )


async def test_imagine_never_falls_back(make_rig: RigFactory) -> None:
    alpha_imaginer = FakeImaginer(ProviderError("alpha", Fault.BUSY))
    beta_imaginer = FakeImaginer(snapshot("g-1", "CREATED"))
    rig = make_rig(
        make_provider("alpha", imaginer=alpha_imaginer, poller=FakePoller(snapshot("g-1", "CREATED"))),
        make_provider("beta", imaginer=beta_imaginer, poller=FakePoller(snapshot("g-1", "CREATED"))),
    )
    done = await rig.run(await rig.job("alpha", TaskKind.IMAGINE, prompt="a cat"), ())
    assert (done.state, done.fault, done.provider) == (JobState.FAILED, Fault.BUSY, "alpha")
    assert beta_imaginer.calls == []
    assert rig.quotas.states() == ["refunded"]


async def test_a_create_whose_answer_was_lost_ends_lost_and_is_never_sent_again(make_rig: RigFactory) -> None:
    alpha, alpha_describer, _ = polled("alpha", ProviderError("alpha", Fault.LOST, "timed out"))
    beta, beta_describer = synchronous("beta")
    rig = make_rig(alpha, beta)
    job = await rig.job("alpha")

    done = await rig.run(job)

    assert (done.state, done.fault) == (JobState.FAILED, Fault.LOST)
    # The task may exist: the job stays STARTING (never back to QUEUED) until it ends, and goes nowhere else.
    assert rig.journal.of(job.id) == [
        "saved QUEUED",
        "saved STARTING",
        "saved FAILED",
        "reported FAILED",
        "finished",
    ]
    assert len(alpha_describer.calls) == 1
    assert beta_describer.calls == []
    assert rig.quotas.settles == [("refund", job.usage_id, "lost", True)]


async def test_a_rejected_input_is_paid_for(make_rig: RigFactory) -> None:
    alpha, _, _ = polled("alpha", ProviderError("alpha", Fault.REJECTED, "content policy", status=400))
    beta, beta_describer = synchronous("beta")
    rig = make_rig(alpha, beta)
    job = await rig.job("alpha")

    done = await rig.run(job)

    assert (done.state, done.fault) == (JobState.FAILED, Fault.REJECTED)
    assert beta_describer.calls == []  # the input was refused, not the provider unavailable
    assert rig.quotas.settles == [("commit", job.usage_id, "rejected", True)]
    assert rig.quotas.states() == ["committed"]


# --- time ---------------------------------------------------------------------------------------------------


async def test_a_task_past_its_timeout_ends_timeout_and_is_refunded(make_rig: RigFactory) -> None:
    provider, _, poller = polled("alpha", polls=[snapshot("t-1", "IN_PROGRESS")])
    rig = make_rig(provider, config=replace(FAST, task_timeout=60))
    poller.script.before_answer = lambda: rig.clock.advance(25)  # each poll takes 25 s of the task's time
    job = await rig.job()

    done = await rig.run(job)

    assert (done.state, done.fault) == (JobState.FAILED, Fault.TIMEOUT)
    assert len(poller.calls) == 3  # at 25, 50 and 75 s; 75 s is past the 60 s deadline
    assert rig.reporter.states(job.id) == [JobState.CREATED, JobState.IN_PROGRESS, JobState.FAILED]
    assert rig.quotas.settles == [("refund", job.usage_id, "timeout", True)]


async def test_a_quick_synchronous_answer_is_the_end_and_nothing_before_it(make_rig: RigFactory) -> None:
    beta, describer = synchronous("beta")
    rig = make_rig(beta)  # "In progress" only after 60 s
    job = await rig.job("beta")

    done = await rig.run(job)

    assert (done.state, done.result_text, done.provider_task_id) == (
        JobState.COMPLETED,
        "described by beta",
        "s-1",
    )
    assert rig.journal.of(job.id) == [
        "saved QUEUED",
        "saved STARTING",
        "saved COMPLETED",
        "reported COMPLETED",
        "finished",
    ]
    assert describer.calls[0].webhook_url is None
    assert rig.quotas.states() == ["committed"]


async def test_a_slow_synchronous_answer_shows_in_progress_without_saving_it(make_rig: RigFactory) -> None:
    beta, describer = synchronous("beta")
    describer.script.hold = asyncio.Event()
    rig = make_rig(beta, config=replace(FAST, progress_after=0.01))
    job = await rig.job("beta")
    await rig.runner.submit(job, [IMAGE])

    await rig.reporter.reached(job.id, JobState.IN_PROGRESS)
    # Shown, not saved: a restart now must know the answer was never saved.
    assert rig.jobs.saved(job.id).state is JobState.STARTING
    describer.script.hold.set()
    done = await rig.jobs.wait_finished(job.id)

    assert done.state is JobState.COMPLETED
    assert rig.journal.of(job.id) == [
        "saved QUEUED",
        "saved STARTING",
        "reported IN_PROGRESS",
        "saved COMPLETED",
        "reported COMPLETED",
        "finished",
    ]


# --- imagine ---------------------------------------------------------------------------------------------


async def test_imagine_fetches_its_images_while_their_urls_live_and_saves_them(make_rig: RigFactory) -> None:
    result = ImageBytes(png_bytes(colour=(0, 90, 200)), "image/png")
    imaginer = FakeImaginer(snapshot("g-1", "CREATED"), results=[result])
    poller = FakePoller(snapshot("g-1", "COMPLETED", image_urls=["https://cdn.example/g-1.png"]))
    rig = make_rig(make_provider("alpha", imaginer=imaginer, poller=poller))
    reference = ImageBytes(png_bytes(colour=(1, 2, 3)), "image/png")
    job = await rig.job("alpha", TaskKind.IMAGINE, prompt="a blue square")

    done = await rig.run(job, [reference])

    assert imaginer.calls[0].prompt == "a blue square"
    assert imaginer.calls[0].references == (reference,)
    assert [s.image_urls for s in imaginer.fetched] == [("https://cdn.example/g-1.png",)]
    assert await rig.jobs.images(job.id, "output") == [result]
    assert await rig.jobs.images(job.id, "input") == [reference]
    assert done.state is JobState.COMPLETED
    assert rig.journal.of(job.id, "saved", "reported")[-2:] == ["saved COMPLETED", "reported COMPLETED"]
    assert rig.quotas.states() == ["committed"]


async def test_imagine_whose_results_cannot_be_fetched_is_refunded(make_rig: RigFactory) -> None:
    imaginer = FakeImaginer(
        snapshot("g-1", "COMPLETED", image_urls=["https://cdn.example/gone.png"]),
        fetch_error=ProviderError("alpha", Fault.BAD_RESULT, "404"),
    )
    rig = make_rig(make_provider("alpha", imaginer=imaginer, poller=FakePoller(snapshot("g-1", "CREATED"))))
    job = await rig.job("alpha", TaskKind.IMAGINE, prompt="a cat")

    done = await rig.run(job, ())

    assert (done.state, done.fault) == (JobState.FAILED, Fault.BAD_RESULT)
    assert await rig.jobs.images(job.id, "output") == []
    assert rig.quotas.settles == [("refund", job.usage_id, "bad_result", True)]


# --- resume ----------------------------------------------------------------------------------------------


async def test_resume_carries_each_job_on_from_its_saved_state(make_rig: RigFactory) -> None:
    provider, describer, poller = polled(
        "alpha",
        snapshot("t-queued", "COMPLETED", prompt="started at resume"),
        polls=[snapshot("t-running", "COMPLETED", prompt="finished while away")],
    )
    # Polls an hour apart: the job saved IN_PROGRESS can only finish now if it is polled at once.
    rig = make_rig(provider, config=SLOW)
    # Dispatched (it had left the line) but not yet started when the bot stopped.
    queued = replace(await rig.job(), dispatched_at=rig.clock.now)
    await rig.jobs.create(queued, [IMAGE])
    rig.clock.advance(1)
    starting = await rig.job()
    await rig.jobs.create(starting, [IMAGE])
    await rig.jobs.update(starting, state=JobState.STARTING)
    rig.clock.advance(1)
    # Past its deadline too: its result, if it has one, beats a timeout.
    running = replace(await rig.job(), created_at=rig.clock.now - 3 * 7200)
    await rig.jobs.create(running, [IMAGE])
    await rig.jobs.update(running, state=JobState.IN_PROGRESS, provider_task_id="t-running")

    assert await rig.runner.resume() == 3
    queued_done = await rig.jobs.wait_finished(queued.id)
    starting_done = await rig.jobs.wait_finished(starting.id)
    running_done = await rig.jobs.wait_finished(running.id)

    assert (queued_done.state, queued_done.result_text) == (JobState.COMPLETED, "started at resume")
    assert len(describer.calls) == 1  # for the queued job only
    assert describer.calls[0].image == IMAGE  # its input, read back from storage

    assert (starting_done.state, starting_done.fault) == (JobState.FAILED, Fault.LOST)
    assert rig.journal.of(starting.id) == [
        "saved QUEUED",
        "saved STARTING",
        "saved FAILED",
        "reported FAILED",
        "finished",
    ]

    assert (running_done.state, running_done.result_text) == (JobState.COMPLETED, "finished while away")
    assert poller.calls == [(TaskKind.DESCRIBE, "t-running")]

    assert [rig.quotas.row(job.usage_id or 0).state for job in (queued, starting, running)] == [
        "committed",
        "refunded",
        "committed",
    ]


# --- webhooks ----------------------------------------------------------------------------------------------


async def test_a_delivery_for_a_listened_task_reaches_its_job(make_rig: RigFactory) -> None:
    provider, describer, poller = polled("alpha", webhooks=True)
    rig = make_rig(provider, config=SLOW, webhooks=True)
    job = await rig.job()
    await rig.runner.submit(job, [IMAGE])
    await rig.reporter.reached(job.id, JobState.CREATED)

    assert await rig.runner.deliver("alpha", webhook_body("t-1", "IN_PROGRESS")) is True
    await rig.reporter.reached(job.id, JobState.IN_PROGRESS)
    assert await rig.runner.deliver("alpha", webhook_body("t-1", "COMPLETED", prompt="delivered")) is True
    done = await rig.jobs.wait_finished(job.id)

    assert (done.state, done.result_text) == (JobState.COMPLETED, "delivered")
    assert describer.calls[0].webhook_url == WEBHOOK_URL
    assert poller.calls == []  # the safety-net poll is an hour away
    assert rig.reporter.states(job.id) == [JobState.CREATED, JobState.IN_PROGRESS, JobState.COMPLETED]
    # Once the job is done, a late delivery for its task is known (and changes nothing).
    assert await rig.runner.deliver("alpha", webhook_body("t-1", "COMPLETED", prompt="again")) is True
    assert rig.jobs.saved(job.id).result_text == "delivered"


async def test_a_delivery_ahead_of_the_create_answer_is_kept_and_used(make_rig: RigFactory) -> None:
    provider, describer, poller = polled("alpha", webhooks=True)
    describer.script.hold = asyncio.Event()
    rig = make_rig(provider, config=SLOW, webhooks=True)
    job = await rig.job()
    await rig.runner.submit(job, [IMAGE])
    await describer.script.wait_for_calls(1)

    # The create is out and its answer not saved: nobody knows task t-1 yet.
    assert await rig.runner.deliver("alpha", webhook_body("t-1", "COMPLETED", prompt="early")) is False
    describer.script.hold.set()
    done = await rig.jobs.wait_finished(job.id)

    assert (done.state, done.result_text) == (JobState.COMPLETED, "early")
    assert poller.calls == []
    assert rig.reporter.states(job.id) == [JobState.CREATED, JobState.COMPLETED]


async def test_an_early_delivery_is_dropped_after_two_minutes(make_rig: RigFactory) -> None:
    provider, describer, poller = polled(
        "alpha", webhooks=True, polls=[snapshot("t-1", "COMPLETED", prompt="polled")]
    )
    describer.script.hold = asyncio.Event()
    rig = make_rig(provider, config=replace(FAST, webhook_poll_interval=0), webhooks=True)
    job = await rig.job()
    await rig.runner.submit(job, [IMAGE])
    await describer.script.wait_for_calls(1)

    assert await rig.runner.deliver("alpha", webhook_body("t-1", "COMPLETED", prompt="early")) is False
    rig.clock.advance(121)
    assert await rig.runner.deliver("alpha", webhook_body("t-other", "CREATED")) is False  # sweeps stale ones
    describer.script.hold.set()
    done = await rig.jobs.wait_finished(job.id)

    assert done.result_text == "polled"
    assert poller.calls == [(TaskKind.DESCRIBE, "t-1")]


async def test_deliveries_that_belong_to_no_job(make_rig: RigFactory) -> None:
    alpha, _, _ = polled("alpha", webhooks=True)
    beta, _, _ = polled("beta")  # no webhook reader
    rig = make_rig(alpha, beta, webhooks=True)

    assert await rig.runner.deliver("alpha", webhook_body("unknown-task", "COMPLETED")) is False
    assert await rig.runner.deliver("beta", webhook_body("t-1", "COMPLETED")) is False
    assert await rig.runner.deliver("nobody", webhook_body("t-1", "COMPLETED")) is False
    with pytest.raises(ProviderError) as bad:
        await rig.runner.deliver("alpha", b"{not json")
    assert bad.value.fault is Fault.BAD_RESULT


# --- stopping -------------------------------------------------------------------------------------------


async def test_shutdown_pauses_a_waiting_job_in_its_saved_state(make_rig: RigFactory) -> None:
    provider, _, poller = polled("alpha")
    rig = make_rig(provider, config=SLOW)
    job = await rig.job()
    await rig.runner.submit(job, [IMAGE])
    await rig.reporter.reached(job.id, JobState.CREATED)

    await rig.runner.shutdown(grace=5.0)

    assert rig.runner.accepting is False
    assert rig.runner.running_count == 0
    saved = rig.jobs.saved(job.id)
    assert (saved.state, saved.finished_at, saved.provider_task_id) == (JobState.CREATED, None, "t-1")
    assert saved.route.interaction_token == "token"  # kept for the next start
    assert rig.reporter.states(job.id) == [JobState.CREATED]
    assert rig.reporter.forgotten == [job.id]
    assert rig.quotas.settles == []
    assert rig.quotas.states() == ["reserved"]
    assert poller.calls == []
    assert [j.id for j in await rig.jobs.unfinished()] == [job.id]


async def test_a_full_disk_pauses_the_job_without_a_traceback(
    make_rig: RigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    provider, _, _ = polled("alpha", polls=[snapshot("t-1", "IN_PROGRESS")])
    rig = make_rig(provider)
    rig.jobs.fail(
        "update",
        StorageFull("database or disk is full"),
        when=lambda c: c.get("state") is JobState.IN_PROGRESS,
    )
    job = await rig.job()

    with caplog.at_level(logging.DEBUG):
        await rig.runner.submit(job, [IMAGE])
        await rig.reporter.forgot(job.id)
        await rig.runner.shutdown(grace=1.0)

    saved = rig.jobs.saved(job.id)
    assert (saved.state, saved.finished_at) == (JobState.CREATED, None)  # carried on at the next start
    assert rig.reporter.states(job.id) == [JobState.CREATED]
    assert rig.quotas.states() == ["reserved"]
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING] == []
    assert any("cannot be written" in r.getMessage() for r in caplog.records)


async def test_the_breaker_opens_after_repeated_faults_and_answers_unavailable(make_rig: RigFactory) -> None:
    provider, describer, _ = polled("alpha", ProviderError("alpha", Fault.BUSY))
    rig = make_rig(provider, breaker_threshold=2)

    first = await rig.run(await rig.job())
    second = await rig.run(await rig.job())
    assert [first.fault, second.fault] == [Fault.BUSY, Fault.BUSY]
    assert rig.breakers["alpha"].is_open

    third = await rig.job()
    done = await rig.run(third)
    assert (done.state, done.fault) == (JobState.FAILED, Fault.UNAVAILABLE)
    assert len(describer.calls) == 2  # the third never reached the provider
    assert rig.journal.of(third.id) == ["saved QUEUED", "saved FAILED", "reported FAILED", "finished"]
    assert rig.quotas.states() == ["refunded"] * 3

    # After the cooldown one trial goes through; it fails, and the breaker opens again.
    rig.clock.advance(61)
    fourth = await rig.run(await rig.job())
    assert fourth.fault is Fault.BUSY
    assert len(describer.calls) == 3
    assert rig.breakers["alpha"].is_open


async def test_a_cancel_reaches_the_process_that_drives_the_task(make_rig: RigFactory) -> None:
    """On a shared store a task at its provider is cancelled by its driver, whichever process got the click."""
    provider, _, _ = polled("alpha", snapshot("t-1", "CREATED"))
    rig = make_rig(provider, config=replace(SLOW, lease_renewal=0.01), shared=True)
    job = await rig.job()
    await rig.runner.submit(job, [IMAGE])
    await rig.reporter.reached(job.id, JobState.CREATED)
    assert await rig.runner.resume() == 0  # it keeps its leases (and reads the requests) from now on
    # Another process, on the same store, with its own reporter: it drives nothing.
    elsewhere = JobRunner(
        jobs=rig.jobs,
        quotas=rig.quotas,
        providers={"alpha": provider},
        breakers={"alpha": CircuitBreaker("alpha")},
        reporter=RecordingReporter(),
        config=SLOW,
        clock=rig.clock,
    )
    assert await elsewhere.cancel(job.id, spend=False) is Cancelled.NEEDS_CONSENT
    assert isinstance(rig.jobs, SharedMemoryJobRepository)
    assert rig.jobs.cancel_requests == set()
    assert await elsewhere.cancel(job.id, spend=True) is Cancelled.SPENT

    done = await rig.jobs.wait_finished(job.id)
    assert done.state is JobState.CANCELLED
    assert rig.reporter.states(job.id)[-1] is JobState.CANCELLED  # shown by the driver
    assert rig.quotas.settles == [("commit", job.usage_id, "CANCELLED", True)]  # it had reached its provider
    assert await elsewhere.cancel(job.id, spend=True) is Cancelled.ENDED
    await elsewhere.shutdown(grace=1.0)


# --- ends that were not shown, faults at the very end, and jobs that outlived their settings ----------------


async def test_an_end_discord_did_not_take_is_offered_again_and_settled_once(make_rig: RigFactory) -> None:
    provider, _, _ = polled("alpha", snapshot("t-1", "COMPLETED", prompt="a fox"))
    rig = make_rig(provider)
    rig.reporter.refuse_ends = 2  # two 5xx, then Discord takes it
    done = await rig.run(await rig.job())
    assert done.state is JobState.COMPLETED
    assert len(rig.reporter.refused) == 2
    assert rig.reporter.states(done.id)[-1] is JobState.COMPLETED
    assert rig.quotas.states() == ["committed"]


async def test_an_end_never_taken_is_left_for_the_next_start_and_shown_there(
    make_rig: RigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    provider, describer, _ = polled("alpha", snapshot("t-1", "COMPLETED", prompt="a fox"))
    rig = make_rig(provider)
    rig.reporter.refuse_ends = 4  # more than the runner offers it
    job = await rig.job()
    with caplog.at_level(logging.WARNING):
        await rig.runner.submit(job, [IMAGE])
        await rig.reporter.changes.wait_until(lambda: len(rig.reporter.refused) == 4, "four refused ends")
        await rig.runner.shutdown(grace=1.0)
    saved = rig.jobs.saved(job.id)
    assert (saved.state, saved.finished_at) == (JobState.COMPLETED, None)  # not closed: not shown
    assert any("shown at the next start" in r.getMessage() for r in caplog.records)

    # The next start shows it, and the member is charged once.
    again = make_rig(provider)
    again.jobs, again.quotas = rig.jobs, rig.quotas
    runner = JobRunner(
        jobs=rig.jobs,
        quotas=rig.quotas,
        providers={"alpha": provider},
        breakers=again.breakers,
        reporter=again.reporter,
        config=FAST,
        clock=again.clock,
    )
    assert await runner.resume() == 1
    shown = await rig.jobs.wait_finished(job.id)
    assert shown.finished_at is not None
    assert again.reporter.states(job.id) == [JobState.COMPLETED]
    assert len(describer.calls) == 1
    assert rig.quotas.states() == ["committed"]
    assert [settled for *_, settled in rig.quotas.settles] == [True, False]  # the second commit did nothing
    await runner.shutdown(grace=1.0)


async def test_a_full_disk_at_the_very_end_pauses_quietly(
    make_rig: RigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    provider, _, _ = polled("alpha", snapshot("t-1", "COMPLETED", prompt="a fox"))
    rig = make_rig(provider)
    rig.jobs.fail("finish", StorageFull("database or disk is full"))
    job = await rig.job()
    with caplog.at_level(logging.DEBUG):
        await rig.runner.submit(job, [IMAGE])
        await rig.reporter.forgot(job.id)
        await rig.runner.shutdown(grace=1.0)
    assert rig.jobs.saved(job.id).finished_at is None  # shown at the next start, charged once
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
    assert any("paused in state COMPLETED" in r.getMessage() for r in caplog.records)


async def test_tasks_that_time_out_count_against_the_provider(make_rig: RigFactory) -> None:
    # Tasks are accepted and then never finish: the breaker must see that, not only refused creates.
    provider, describer, _ = polled(
        "alpha", snapshot("t-1", "CREATED"), polls=[snapshot("t-1", "IN_PROGRESS")]
    )
    rig = make_rig(provider, breaker_threshold=2)

    async def never_finishing() -> Job:
        job = await rig.job()
        await rig.runner.submit(job, [IMAGE])
        await rig.reporter.reached(job.id, JobState.IN_PROGRESS)
        rig.clock.advance(FAST.task_timeout + 1)
        return await rig.jobs.wait_finished(job.id)

    assert [(await never_finishing()).fault for _ in range(2)] == [Fault.TIMEOUT, Fault.TIMEOUT]
    assert rig.breakers["alpha"].is_open
    blocked = await rig.run(await rig.job())
    assert blocked.fault is Fault.UNAVAILABLE
    assert len(describer.calls) == 2


async def test_a_job_whose_provider_left_the_settings_ends_cleanly(
    make_rig: RigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    provider, _, _ = polled("alpha")
    rig = make_rig(provider)
    orphan = await rig.job("gone")
    await rig.jobs.create(orphan, [IMAGE])
    with caplog.at_level(logging.WARNING):
        assert await rig.runner.resume() == 1
        done = await rig.jobs.wait_finished(orphan.id)
    assert (done.state, done.fault) == (JobState.FAILED, Fault.MISCONFIGURED)
    assert rig.quotas.row(orphan.usage_id or 0).state == "refunded"
    assert [r for r in caplog.records if r.exc_info] == []
    assert any("gone, which is no longer configured" in r.getMessage() for r in caplog.records)


async def test_a_resumed_job_is_fitted_to_the_provider_it_has_now(make_rig: RigFactory) -> None:
    # Saved after a fallback to a provider with smaller limits, before it was started again.
    small = ImageLimits(max_side=32, max_bytes=100_000)
    describer = FakeDescriber(snapshot("t-1", "COMPLETED", prompt="small"))
    provider = make_provider("beta", describer=describer, limits=small)
    rig = make_rig(provider)
    job = replace(await rig.job("beta"), dispatched_at=rig.clock.now)
    await rig.jobs.create(job, [ImageBytes(png_bytes((400, 300)), "image/png")])
    assert await rig.runner.resume() == 1
    await rig.jobs.wait_finished(job.id)
    with Image.open(io.BytesIO(describer.calls[0].image.data)) as sent:
        assert max(sent.size) <= 32
