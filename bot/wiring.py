"""The object graph, built in one place for the bot and for the terminal: store, providers, runner, service.

The store is SQLite (one process, the default) or PostgreSQL (DATABASE_URL: several processes); the core
sees either through the same ports. The PostgreSQL modules are imported only when one is used.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from bot.core.breaker import CircuitBreaker
from bot.core.metered import MeteredJobs, MeteredQuotas, live_state, metered_provider
from bot.core.moderation import Moderation
from bot.core.runner import JobRunner, RunnerConfig
from bot.core.safe_download import SafeDownloader
from bot.core.service import ServiceConfig, TaskService
from bot.domain.metrics import NO_METRICS, Metrics
from bot.domain.ports import (
    DeliveryRelay,
    JobReporter,
    JobRepository,
    Provider,
    RulesRepository,
    TaskDurations,
)
from bot.domain.quota import LedgerSettings
from bot.domain.tasks import TaskKind
from bot.providers import registry
from bot.providers.spec import BuildContext
from bot.settings import Settings
from bot.store.sqlite.database import Database
from bot.store.sqlite.durations import SqliteTaskDurations
from bot.store.sqlite.jobs import SqliteJobRepository
from bot.store.sqlite.quotas import SqliteQuotaLedger
from bot.store.sqlite.rules import SqliteRules
from bot.webhooks import ReplayStore, webhook_url

if TYPE_CHECKING:
    from bot.store.postgres.database import PgDatabase
    from bot.store.postgres.jobs import PgJobRepository
    from bot.store.postgres.quotas import PgQuotaLedger

# A reservation outlives its task's timeout by this much before it is taken as abandoned.
RESERVATION_MARGIN = 300.0


@dataclass(frozen=True, slots=True)
class ReporterNeeds:
    """What a reporter is built with: the jobs' images and routes, and how to name what it shows."""

    jobs: JobRepository
    labels: Mapping[str, str]  # provider name -> the name members see
    can_imagine: bool  # whether any provider generates images (else no Imagine button is shown)


ReporterFactory = Callable[[ReporterNeeds], JobReporter]


@dataclass(frozen=True, slots=True)
class Core:
    """Everything below the Discord edge, wired together."""

    settings: Settings
    db: Database | PgDatabase
    jobs: SqliteJobRepository | PgJobRepository
    quotas: SqliteQuotaLedger | PgQuotaLedger
    rules: RulesRepository
    providers: dict[str, Provider]
    breakers: dict[str, CircuitBreaker]
    runner: JobRunner
    service: TaskService
    downloader: SafeDownloader
    labels: dict[str, str]  # provider name -> the name members see
    # Only on a store several processes share: their replay guard (None: this process's own, in memory).
    replays: ReplayStore | None = None

    async def close(self) -> None:
        await self.downloader.close()


def process_name() -> str:
    """Name this process for the leases it holds: host, pid, and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def build_core(
    settings: Settings,
    session: aiohttp.ClientSession,
    db: Database | PgDatabase,
    *,
    reporter_for: ReporterFactory,
    downloader: SafeDownloader | None = None,
    clock: Callable[[], float] = time.time,
    metrics: Metrics = NO_METRICS,
    fall_back: bool = True,
) -> Core:
    """Build the core from the settings: the reporter (a Discord message, a terminal) is the caller's."""
    providers = registry.build_providers(
        settings.providers, BuildContext(session=session, request_timeout=settings.request_timeout_seconds)
    )
    ledger_settings = LedgerSettings(
        defaults={
            TaskKind.DESCRIBE: settings.quota_describe_per_day,
            TaskKind.IMAGINE: settings.quota_imagine_per_day,
        },
        max_inflight_per_provider=settings.max_inflight_per_provider,
        max_queue_per_provider=settings.max_queue_per_provider,
        reservation_ttl=settings.task_timeout_seconds + RESERVATION_MARGIN,
    )
    jobs: SqliteJobRepository | PgJobRepository
    quotas: SqliteQuotaLedger | PgQuotaLedger
    rules: RulesRepository
    durations: TaskDurations
    relay: DeliveryRelay | None = None
    replays: ReplayStore | None = None
    if isinstance(db, Database):
        jobs = SqliteJobRepository(db, clock=clock)
        quotas = SqliteQuotaLedger(db, **ledger_settings, clock=clock)
        rules = SqliteRules(db, clock=clock)
        durations = SqliteTaskDurations(db)
    else:
        from bot.store.postgres.durations import PgTaskDurations  # noqa: PLC0415 (only with DATABASE_URL)
        from bot.store.postgres.jobs import PgJobRepository  # noqa: PLC0415
        from bot.store.postgres.quotas import PgQuotaLedger  # noqa: PLC0415
        from bot.store.postgres.rules import PgRules  # noqa: PLC0415
        from bot.store.postgres.webhooks import PgDeliveryRelay, PgReplayGuard  # noqa: PLC0415

        jobs = PgJobRepository(
            db, owner=process_name(), lease_seconds=settings.job_lease_seconds, clock=clock
        )
        quotas = PgQuotaLedger(db, **ledger_settings, clock=clock)
        rules = PgRules(db, clock=clock)
        durations = PgTaskDurations(db)
        if settings.webhooks_enabled:
            relay = PgDeliveryRelay(db)
        replays = PgReplayGuard(db)
    providers = {name: metered_provider(provider, metrics) for name, provider in providers.items()}
    breakers = {name: CircuitBreaker(name) for name in providers}
    moderation = Moderation(rules)
    labels = registry.labels(settings.providers)

    def webhook_url_for(name: str) -> str | None:
        if settings.webhook_public_url is None or not settings.webhooks_enabled:
            return None
        if providers[name].webhooks is None:
            return None
        return webhook_url(str(settings.webhook_public_url), name)

    # The runner's saves and the service's reservations are counted on their way to storage.
    runner_jobs = MeteredJobs(jobs, metrics, clock=clock)
    metrics.watch(live_state(runner_jobs, breakers))
    runner = JobRunner(
        jobs=runner_jobs,
        quotas=quotas,
        providers=providers,
        breakers=breakers,
        reporter=reporter_for(
            ReporterNeeds(jobs, labels, any(p.imaginer is not None for p in providers.values()))
        ),
        config=RunnerConfig(
            poll_interval=settings.poll_interval_seconds,
            poll_max_interval=settings.poll_max_interval_seconds,
            task_timeout=settings.task_timeout_seconds,
            progress_after=settings.edit_coalesce_seconds,
            max_running_per_provider=settings.max_inflight_per_provider,
            max_running_per_member=settings.max_inflight_per_user,
            lease_renewal=settings.job_lease_seconds / 3,
            fall_back=fall_back,
        ),
        webhook_url_for=webhook_url_for,
        moderation=moderation,
        relay=relay,
        clock=clock,
        durations=durations,
    )
    downloader = downloader or SafeDownloader(max_bytes=settings.max_image_bytes)
    service = TaskService(
        config=ServiceConfig(
            max_image_bytes=settings.max_image_bytes,
            describe_cache_days=settings.describe_cache_days,
            default_describe_provider=settings.default_describe_provider,
        ),
        jobs=jobs,
        quotas=MeteredQuotas(quotas, metrics),
        runner=runner,
        providers=providers,
        downloader=downloader,
        moderation=moderation,
        clock=clock,
    )
    return Core(
        settings=settings,
        db=db,
        jobs=jobs,
        quotas=quotas,
        rules=rules,
        providers=providers,
        breakers=breakers,
        runner=runner,
        service=service,
        downloader=downloader,
        labels=labels,
        replays=replays,
    )
