"""The metrics' parts on their own: label rules, the Discord trace, per-bot registries, the breaker's state."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest
from aiohttp import web

from bot.core.breaker import CircuitBreaker
from bot.core.metered import MeteredJobs
from bot.domain.errors import ProviderError
from bot.domain.metrics import (
    NO_METRICS,
    BreakerState,
    LiveState,
    Phase,
    TaskOutcome,
    outcome_of,
    phase_of,
    request_status,
    status_label,
)
from bot.domain.tasks import Fault, Job, JobState, Notice, NoticeCode, Route, TaskKind
from bot.observability.discord_http import (
    API_ROUTE,
    CALLBACK_ROUTE,
    OTHER_ROUTE,
    WEBHOOK_ROUTE,
    discord_trace,
    rate_limited_by,
    route_of,
    snowflake_time,
)
from bot.observability.prometheus import PrometheusMetrics
from tests.memory import MemoryJobRepository, SharedMemoryJobRepository


def _job(state: JobState, fault: Fault | None = None, notice: Notice | None = None) -> Job:
    job = Job.new(kind=TaskKind.DESCRIBE, provider="freepik", guild_id=1, user_id=2, route=Route(3))
    return replace(job, state=state, fault=fault, notice=notice)


def test_an_outcome_is_the_rule_that_charges_or_refunds() -> None:
    assert outcome_of(_job(JobState.COMPLETED)) is TaskOutcome.COMPLETED
    assert outcome_of(_job(JobState.COMPLETED, notice=Notice(NoticeCode.CACHED))) is TaskOutcome.CACHED
    fallback = Notice(NoticeCode.FALLBACK, {"failed": "freepik", "used": "novita"})
    assert outcome_of(_job(JobState.COMPLETED, notice=fallback)) is TaskOutcome.COMPLETED
    assert outcome_of(_job(JobState.FAILED, Fault.REJECTED)) is TaskOutcome.FAILED
    for fault in Fault:
        if not fault.member_pays:
            assert outcome_of(_job(JobState.FAILED, fault)) is TaskOutcome.REFUNDED


def test_phases_split_waiting_from_in_flight() -> None:
    assert phase_of(_job(JobState.QUEUED)) is Phase.WAITING
    assert {phase_of(_job(s)) for s in (JobState.STARTING, JobState.CREATED, JobState.IN_PROGRESS)} == {
        Phase.IN_FLIGHT
    }
    # Dispatched, then saved back to QUEUED (a refused create, a fallback): out of the line, not waiting.
    assert phase_of(replace(_job(JobState.QUEUED), dispatched_at=time.time())) is Phase.IN_FLIGHT
    assert phase_of(_job(JobState.COMPLETED)) is None
    assert phase_of(_job(JobState.FAILED)) is None


async def test_a_dispatched_job_saved_back_to_queued_counts_in_flight() -> None:
    jobs = MeteredJobs(MemoryJobRepository(), NO_METRICS)
    job = _job(JobState.QUEUED)
    await jobs.create(job)
    assert jobs.live() == Counter({("freepik", Phase.WAITING): 1})
    # Out of the line (`next_in_line`), its create refused: saved back to QUEUED for a fallback or its end.
    starting = await jobs.update(replace(job, dispatched_at=time.time()), state=JobState.STARTING)
    await jobs.update(starting, state=JobState.QUEUED)
    assert jobs.live() == Counter({("freepik", Phase.IN_FLIGHT): 1})


class _TakenOver(SharedMemoryJobRepository):
    """A shared store on which another process took some jobs over: this one's renewals no longer list them."""

    def __init__(self) -> None:
        super().__init__()
        self.elsewhere: set[str] = set()

    async def renew(self) -> set[str]:
        return await super().renew() - self.elsewhere


async def test_a_job_another_process_took_over_leaves_the_live_gauge() -> None:
    store = _TakenOver()
    jobs = MeteredJobs(store, NO_METRICS)
    kept, lost = _job(JobState.QUEUED), _job(JobState.QUEUED)
    for job in (kept, lost):
        await jobs.create(job)
        await jobs.update(job, state=JobState.CREATED)
    assert jobs.live() == Counter({("freepik", Phase.IN_FLIGHT): 2})

    store.elsewhere.add(lost.id)
    assert await jobs.renew() == {kept.id}
    assert jobs.live() == Counter({("freepik", Phase.IN_FLIGHT): 1})


async def test_a_job_cancelled_in_line_leaves_the_live_gauge_at_once() -> None:
    jobs = MeteredJobs(SharedMemoryJobRepository(), NO_METRICS)
    waiting = _job(JobState.QUEUED)
    await jobs.create(waiting)
    assert jobs.live() == Counter({("freepik", Phase.WAITING): 1})

    cancelled = await jobs.cancel_waiting(waiting.id)
    assert cancelled is not None
    assert cancelled.state is JobState.CANCELLED
    # Its end is not shown yet (the job is not closed), and it no longer waits.
    assert jobs.live() == Counter()


def test_statuses_come_from_a_bounded_set() -> None:
    assert request_status(None) == "ok"
    assert request_status(ProviderError("freepik", Fault.BUSY, status=503)) == "503"
    assert request_status(ProviderError("freepik", Fault.BUSY, status=599)) == "5xx"
    assert request_status(ProviderError("freepik", Fault.REJECTED, status=451)) == "4xx"
    assert request_status(ProviderError("freepik", Fault.UNREACHABLE)) == "unreachable"
    # A 200 whose body was unusable is no HTTP failure: the fault says what went wrong.
    assert request_status(ProviderError("freepik", Fault.BAD_RESULT, status=200)) == "bad_result"
    assert request_status(ValueError("boom")) == "error"
    assert {status_label(code) for code in range(100, 1000)} <= {
        *(str(code) for code in range(400, 505)),
        "1xx",
        "2xx",
        "3xx",
        "4xx",
        "5xx",
    }
    assert status_label(99) == "1xx"
    assert status_label(999) == "5xx"


def test_routes_keep_nothing_of_the_url() -> None:
    assert route_of("/api/v10/interactions/1234567890/tok-en.x/callback") == CALLBACK_ROUTE
    assert route_of("/api/v10/webhooks/111/aW50ZXJhY3Rpb24/messages/@original") == WEBHOOK_ROUTE
    assert route_of("/api/v10/webhooks/111/aW50ZXJhY3Rpb24") == WEBHOOK_ROUTE
    assert route_of("/api/v10/channels/5/messages") == API_ROUTE
    assert route_of("/api/v10/applications/1/commands") == API_ROUTE
    assert route_of("/attachments/1/2/photo.png") == OTHER_ROUTE
    assert route_of("/") == OTHER_ROUTE


def test_snowflakes_say_when_discord_made_them() -> None:
    # Discord's documented example: 175928847299117063 was made at 2016-04-30 11:18:25.796 UTC.
    assert snowflake_time(175928847299117063) == pytest.approx(1462015105.796)


def test_a_429_is_read_by_its_scope_and_wait() -> None:
    assert rate_limited_by({"X-RateLimit-Scope": "user", "X-RateLimit-Reset-After": "1.25"}) == ("user", 1.25)
    assert rate_limited_by({"X-RateLimit-Scope": "shared", "Retry-After": "3"}) == ("shared", 3.0)
    assert rate_limited_by({"X-RateLimit-Global": "true", "Retry-After": "2"}) == ("global", 2.0)
    assert rate_limited_by({"X-RateLimit-Scope": "somebody-else"}) == ("unknown", 0.0)
    assert rate_limited_by({"Retry-After": "soon"}) == ("unknown", 0.0)


class _Seen:
    def __init__(self) -> None:
        self.acks: list[float] = []
        self.errors: list[tuple[str, str]] = []
        self.waits: list[tuple[str, float]] = []

    def interaction_acknowledged(self, seconds: float) -> None:
        self.acks.append(seconds)

    def discord_error(self, route: str, status: str) -> None:
        self.errors.append((route, status))

    def discord_rate_limited(self, reason: str, seconds: float) -> None:
        self.waits.append((reason, seconds))


@pytest.fixture
async def discordish() -> AsyncIterator[str]:
    """A server that answers like Discord's REST API does in the cases the trace reads."""

    async def callback(request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def spent(request: web.Request) -> web.Response:
        headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "0.5"}
        return web.json_response({"id": "1"}, headers=headers)

    async def limited(request: web.Request) -> web.Response:
        headers = {"X-RateLimit-Scope": "user", "X-RateLimit-Reset-After": "0.25", "Retry-After": "1"}
        return web.json_response({"retry_after": 0.25, "global": False}, status=429, headers=headers)

    async def gone(request: web.Request) -> web.Response:
        return web.json_response({"code": 10008}, status=404)

    app = web.Application()
    app.router.add_post("/api/v10/interactions/{id}/{token}/callback", callback)
    app.router.add_post("/api/v10/channels/1/messages", spent)
    app.router.add_patch("/api/v10/webhooks/1/tok/messages/@original", limited)
    app.router.add_get("/api/v10/channels/1/messages/2", gone)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/api/v10"
    await runner.cleanup()


async def test_the_trace_sees_acks_errors_and_waits(discordish: str) -> None:
    seen = _Seen()
    now = time.time()
    # An interaction made 0.4 s ago (a snowflake holds milliseconds since Discord's epoch).
    interaction_id = (int((now - 0.4) * 1000) - 1_420_070_400_000) << 22
    async with aiohttp.ClientSession(trace_configs=[discord_trace(seen, clock=lambda: now)]) as session:
        for method, path in (
            ("POST", f"/interactions/{interaction_id}/a-token/callback"),
            ("POST", "/channels/1/messages"),
            ("PATCH", "/webhooks/1/tok/messages/@original"),
            ("GET", "/channels/1/messages/2"),
        ):
            async with session.request(method, discordish + path) as response:
                await response.read()
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get("http://127.0.0.1:1/api/v10/gateway")
    assert seen.acks == [pytest.approx(0.4, abs=0.002)]
    assert seen.waits == [("bucket", 0.5), ("user", 0.25)]
    assert seen.errors == [(WEBHOOK_ROUTE, "429"), (API_ROUTE, "404"), (API_ROUTE, "connection")]


def test_each_bot_counts_in_a_registry_of_its_own() -> None:
    first, second = PrometheusMetrics(), PrometheusMetrics()
    first.task_started(TaskKind.DESCRIBE, "freepik")
    first.task_started(TaskKind.DESCRIBE, "a-provider-nobody-registered")
    labels = {"kind": "describe", "provider": "freepik"}
    assert first.registry.get_sample_value("imagebot_tasks_started_total", labels) == 1
    assert second.registry.get_sample_value("imagebot_tasks_started_total", labels) is None
    # A name the registry does not know is never a label of its own.
    other = {"kind": "describe", "provider": "other"}
    assert first.registry.get_sample_value("imagebot_tasks_started_total", other) == 1
    # Nothing of the bot's lands in prometheus_client's process-wide default registry.
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("imagebot_tasks_started_total", labels) is None


def test_live_gauges_are_read_at_collection() -> None:
    metrics = PrometheusMetrics()
    state = LiveState(
        jobs={("freepik", Phase.IN_FLIGHT): 2, ("freepik", Phase.WAITING): 3, ("novita", Phase.IN_FLIGHT): 1},
        breakers={"freepik": BreakerState.HALF_OPEN, "novita": BreakerState.CLOSED},
    )
    metrics.watch(lambda: state)
    value = metrics.registry.get_sample_value
    assert value("imagebot_tasks_in_flight", {"provider": "freepik"}) == 2
    assert value("imagebot_tasks_waiting", {"provider": "freepik"}) == 3
    assert value("imagebot_tasks_waiting", {"provider": "novita"}) == 0
    assert value("imagebot_circuit_breaker_state", {"provider": "freepik", "state": "half_open"}) == 1
    assert value("imagebot_circuit_breaker_state", {"provider": "freepik", "state": "open"}) == 0


def test_the_breaker_says_its_state() -> None:
    now = [0.0]
    breaker = CircuitBreaker("freepik", threshold=2, cooldown=10, clock=lambda: now[0])
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure(Fault.BUSY)
    breaker.record_failure(Fault.BUSY)
    assert breaker.state is BreakerState.OPEN
    now[0] = 11
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.check()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
