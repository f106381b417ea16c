"""The terminal commands: check, describe, invite, backup."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import aiohttp

from bot.client import build_providers
from bot.errors import BotError, ProviderError
from bot.images import check_image
from bot.interactions import ReportTarget
from bot.invite import application_id_from_token, invite_url
from bot.jobs import JobRunner, RunnerConfig
from bot.providers.base import TaskKind, TaskState
from bot.providers.breaker import CircuitBreaker
from bot.safe_download import SafeDownloader
from bot.service import TaskService
from bot.settings import Settings
from bot.store.database import Database, migration_files
from bot.store.jobs import Job, JobStore
from bot.store.quotas import Member, QuotaStore
from bot.ui import text


def say(line: str) -> None:
    print(line)


def complain(line: str) -> None:
    print(line, file=sys.stderr)


async def check(settings: Settings, *, live: bool) -> int:
    """Validate settings, database and providers; one line per finding, non-zero on any problem."""
    problems = list(settings.run_problems())
    try:
        db = await Database.open(settings.database_path)
        try:
            version = await db.schema_version()
            await db.set_meta("last_check", str(time.time()))
            say(
                f"ok: database {settings.database_path} is writable, schema version {version}/{len(migration_files())}"
            )
        finally:
            await db.close()
    except Exception as exc:  # any failure here is the finding to report
        problems.append(f"database {settings.database_path}: {exc}")
    configured = settings.configured_providers
    for name in ("freepik", "novita"):
        say(
            f"{'ok' if name in configured else '--'}: {name} is {'configured' if name in configured else 'not configured'}"
        )
    if settings.default_describe_provider:
        say(f"ok: /describe uses {settings.default_describe_provider} by default")
    if live and configured:
        async with aiohttp.ClientSession() as session:
            for name, provider in build_providers(settings, session).items():
                try:
                    await provider.check_key()
                    say(f"ok: {name} accepted the key")
                except ProviderError as exc:
                    problems.append(f"{name}: {exc.fault.value}" + (f" ({exc.detail})" if exc.detail else ""))
    for problem in problems:
        complain(f"error: {problem}")
    return 1 if problems else 0


class _TerminalReporter:
    """Print each new state of the one job to stderr; keep the last one."""

    def __init__(self) -> None:
        self.final: Job | None = None
        self.done = asyncio.Event()

    async def report(self, job: Job) -> None:
        complain(f"{text.STATE_WORDS[job.state]} ({job.provider})")
        if job.finished:
            self.final = job
            self.done.set()

    async def forget(self, job_id: str) -> None:
        return None


async def describe(settings: Settings, source: str, provider_name: str | None) -> int:
    """Describe one image through the same runner the bot uses, and print the prompt."""
    if not settings.configured_providers:
        complain("error: no provider is configured: set FREEPIK_API_KEY or NOVITA_API_KEY in .env")
        return 2
    db = await Database.open(":memory:")
    downloader = SafeDownloader(max_bytes=settings.max_image_bytes)
    reporter = _TerminalReporter()
    try:
        async with aiohttp.ClientSession() as session:
            providers = build_providers(settings, session)
            jobs = JobStore(db)
            quotas = QuotaStore(
                db,
                defaults=dict.fromkeys(TaskKind, -1),
                max_inflight_per_user=1,
                max_inflight_per_provider=1,
                reservation_ttl=settings.task_timeout_seconds,
            )
            runner = JobRunner(
                jobs=jobs,
                quotas=quotas,
                providers=providers,
                breakers={name: CircuitBreaker(name) for name in providers},
                reporter=reporter,
                config=RunnerConfig(
                    settings.poll_interval_seconds,
                    settings.poll_max_interval_seconds,
                    settings.task_timeout_seconds,
                    cache_days=0,
                ),
            )
            service = TaskService(
                settings=settings.model_copy(update={"describe_cache_days": 0}),
                jobs=jobs,
                quotas=quotas,
                runner=runner,
                providers=providers,
                downloader=downloader,
            )
            try:
                if source.startswith(("http://", "https://")):
                    image = await service.fetch_url(source)
                else:
                    data = await asyncio.to_thread(Path(source).read_bytes)
                    image = await asyncio.to_thread(check_image, data, max_bytes=settings.max_image_bytes)
                name = service.describe_provider(provider_name)
                await service.describe(
                    Member(0, 0), image, name, ReportTarget(channel_id=None, via="channel")
                )
                await reporter.done.wait()
            except OSError as exc:
                complain(f"error: cannot read {source}: {exc.strerror}")
                return 2
            except BotError as exc:
                complain(f"error: {text.error_sentence(exc)}")
                return 1
            final = reporter.final
            assert final is not None
            await runner.shutdown(grace=1)
    finally:
        await downloader.close()
        await db.close()
    if final.state is TaskState.COMPLETED and final.result_text:
        say(final.result_text)
        return 0
    assert final.fault is not None
    complain(f"error: {text.fault_sentence(ProviderError(final.provider, final.fault))}")
    return 1


def invite(settings: Settings) -> int:
    if settings.discord_token is None:
        complain("error: DISCORD_TOKEN is not set: the link is made from the bot's id, which the token holds")
        return 2
    application_id = application_id_from_token(settings.discord_token.get_secret_value())
    if application_id is None:
        complain(
            "error: DISCORD_TOKEN does not look like a bot token: copy it again from the developer portal"
        )
        return 2
    say(invite_url(application_id, mention_trigger=settings.mention_trigger))
    return 0


async def backup(settings: Settings, target: str) -> int:
    path = Path(target)
    if _same_file(path, settings.database_path):
        complain("error: the backup must go to another file than the database itself")
        return 2
    db = await Database.open(settings.database_path)
    try:
        await db.backup_to(path)
    finally:
        await db.close()
    say(f"ok: wrote a consistent copy of {settings.database_path} to {path}")
    return 0


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()
