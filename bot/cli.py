"""The terminal commands: check, health, describe, invite, backup, restore."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

import aiohttp

from bot.client import build_providers
from bot.errors import BotError, ProviderError, ProviderFault
from bot.heartbeat import heartbeat_age, heartbeat_path
from bot.interactions import ReportTarget
from bot.invite import SCOPES, application_id_from_token, invite_url, permission_names, required_permissions
from bot.jobs import JobRunner, RunnerConfig
from bot.providers.base import TaskKind, TaskState
from bot.providers.breaker import CircuitBreaker
from bot.safe_download import SafeDownloader
from bot.service import TaskService
from bot.settings import Settings
from bot.store.database import Database, DatabaseUnusable, migration_files
from bot.store.file_access import storage_problem
from bot.store.jobs import Job, JobStore
from bot.store.quotas import Member, QuotaStore
from bot.store.restore import RestoreRefused, utc_stamp
from bot.store.restore import restore as restore_backup
from bot.ui import text

# Every fault an admin must fix ends a command with this status (as a bad setting does).
EXIT_PROBLEM = 2


def say(line: str) -> None:
    print(line)


def complain(line: str) -> None:
    print(line, file=sys.stderr)


async def check(settings: Settings, *, live: bool) -> int:
    """Validate settings, database and providers; one line per finding, non-zero on any problem."""
    problems = list(settings.run_problems())
    problems += await _check_database(settings.database_path)
    configured = settings.configured_providers
    for name in ("freepik", "novita"):
        if name in configured:
            say(f"ok: {name} is configured")
        else:
            say(f"--: {name} is not configured ({name.upper()}_API_KEY is empty)")
    if settings.default_describe_provider:
        say(f"ok: /describe uses {settings.default_describe_provider} by default")
    if live and configured:
        async with aiohttp.ClientSession() as session:
            for name, provider in build_providers(settings, session).items():
                try:
                    await provider.check_key()
                except ProviderError as exc:
                    problems.append(_key_problem(name, exc))
                else:
                    say(f"ok: {name} accepted {name.upper()}_API_KEY")
    for problem in problems:
        complain(f"error: {problem}")
    return EXIT_PROBLEM if problems else 0


async def _check_database(path: Path) -> list[str]:
    """Open, migrate and write the database; return what went wrong, one line each."""
    try:
        db = await Database.open(path)
        try:
            version = await db.schema_version()
            await db.set_meta("last_check", str(time.time()))
        finally:
            await db.close()
    except DatabaseUnusable as exc:
        return [str(exc)]
    except Exception as exc:  # any other failure here is the finding to report
        return [f"DATABASE_PATH {path} cannot be opened and written: {_one_line(exc)}"]
    say(f"ok: database {path} is writable, schema version {version}/{len(migration_files())} (current)")
    return []


def _key_problem(name: str, exc: ProviderError) -> str:
    variable = f"{name.upper()}_API_KEY"
    detail = f" ({_one_line(exc.detail)})" if exc.detail else ""
    if exc.fault is ProviderFault.MISCONFIGURED:
        return f"{name} rejected {variable}{detail}: copy the key again from the provider's dashboard and check the plan"
    if exc.fault in (ProviderFault.BUSY, ProviderFault.UNREACHABLE):
        return f"{name} could not be asked{detail}: the key was not tried; check the network and {name.upper()}_BASE_URL"
    return f"{name} did not confirm {variable}: {exc.fault.value}{detail}"


def _one_line(error: BaseException | str) -> str:
    """Return an error as one short line (an exception's text may span lines)."""
    if isinstance(error, OSError) and error.strerror:
        text = f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


async def health(settings: Settings, *, max_age: float) -> int:
    """Exit 0 while the running bot is connected: a fresh heartbeat, and /healthz when webhooks are on."""
    path = heartbeat_path(settings)
    age = await asyncio.to_thread(heartbeat_age, path)
    if age is None:
        complain(f"error: no heartbeat at {path}: the bot is not running or not connected to Discord yet")
        return 1
    if age > max_age:
        complain(
            f"error: the last heartbeat is {age:.0f} s old (more than {max_age:.0f} s): the bot is not connected to Discord"
        )
        return 1
    if settings.webhooks_enabled:
        url = f"http://127.0.0.1:{settings.webhook_port}/healthz"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
                session.get(url) as response,
            ):
                body = await response.text()
                if response.status != 200:
                    complain(f"error: {url} answered {response.status}: {_one_line(body)}")
                    return 1
        except (TimeoutError, aiohttp.ClientError) as exc:
            complain(f"error: the webhook listener at {url} does not answer: {_one_line(exc)}")
            return 1
    say(f"ok: heartbeat {age:.0f} s old")
    return 0


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
                    image = await service.check_bytes(data)
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
    complain(f"error: {_terminal_fault(settings, final.provider, final.fault)}")
    return 1


def _terminal_fault(settings: Settings, provider: str, fault: ProviderFault) -> str:
    """Say what went wrong for the admin at the terminal: the setting to look at, where there is one."""
    prefix = provider.upper()
    if fault is ProviderFault.UNREACHABLE:
        base_url = getattr(settings, f"{provider}_base_url", "")
        return f"{provider} could not be reached at {base_url}: check the network and {prefix}_BASE_URL"
    if fault is ProviderFault.MISCONFIGURED:
        return f"{provider} rejected {prefix}_API_KEY: copy the key again from the provider's dashboard and check the plan"
    return text.fault_sentence(ProviderError(provider, fault))


def invite(settings: Settings) -> int:
    """Print the link that adds the bot to a server with the scopes and the least permissions it needs."""
    if settings.discord_token is None:
        complain("error: DISCORD_TOKEN is not set: the link is made from the bot's id, which the token holds")
        return 2
    application_id = application_id_from_token(settings.discord_token.get_secret_value())
    if application_id is None:
        complain(
            "error: DISCORD_TOKEN does not look like a bot token: copy it again from the developer portal"
        )
        return 2
    permissions = required_permissions(mention_trigger=settings.mention_trigger)
    say(invite_url(application_id, mention_trigger=settings.mention_trigger))
    # The link alone on stdout (so it can be piped); what it asks for on stderr, for the admin.
    complain(f"scopes: {' '.join(SCOPES)}; permissions {permissions.value}: {permission_names(permissions)}")
    return 0


async def backup(settings: Settings, target: str) -> int:
    """Write a consistent copy of the database to `target` (SQLite's backup API), safe while the bot runs.

    A folder (an existing one, or any path ending in /) gets a new timestamped file; an existing backup
    is never overwritten.
    """
    database = settings.database_path
    if not await asyncio.to_thread(database.is_file):
        if await asyncio.to_thread(database.is_dir):
            complain(f"error: {await asyncio.to_thread(storage_problem, database)}")
        else:
            complain(f"error: there is no database at {database} (DATABASE_PATH) to back up")
        return EXIT_PROBLEM
    try:
        path = await asyncio.to_thread(_backup_file_for, target, database)
    except FileExistsError as exc:
        complain(f"error: {exc}")
        return EXIT_PROBLEM
    except OSError as exc:
        complain(f"error: the backup folder for {target} cannot be made: {_one_line(exc)}")
        return EXIT_PROBLEM
    # Copy to a file beside the target, then rename: an interrupted backup never leaves half a copy
    # under the name of a good one.
    partial = path.with_name(path.name + ".partial")
    try:
        await asyncio.to_thread(_remove_copy, partial)
        db = await Database.open(database)
        try:
            await db.backup_to(partial)
        finally:
            await db.close()
        # link() refuses an existing name, where rename would replace it: a backup that appeared
        # meanwhile under the same name stays as it is.
        await asyncio.to_thread(os.link, partial, path)
        await asyncio.to_thread(_remove_copy, partial)
    except DatabaseUnusable as exc:
        await asyncio.to_thread(_remove_copy, partial)
        complain(f"error: {exc}")
        return EXIT_PROBLEM
    except Exception as exc:  # any failure is reported in one line; the partial copy is removed
        await asyncio.to_thread(_remove_copy, partial)
        complain(f"error: the backup to {path} failed: {_one_line(exc)}")
        return 1
    say(f"ok: wrote a consistent copy of {database} to {path}")
    return 0


def _backup_file_for(target: str, database: Path) -> Path:
    """Return the file a backup goes to: a new timestamped one inside a folder target (made if need be)."""
    path = Path(target)
    if _same_file(path, database):
        raise FileExistsError("the backup must go to another file than the database itself")
    # Path() drops a trailing slash, so the string is asked: "backups/" means the folder, even a new one.
    if target.endswith(("/", os.sep)) or path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        stem = f"{database.stem}-{utc_stamp()}"
        candidate = path / f"{stem}{database.suffix}"
        number = 1
        while candidate.exists() or candidate.with_name(candidate.name + ".partial").exists():
            number += 1  # two backups within one second: a second file, never the first one replaced
            candidate = path / f"{stem}-{number}{database.suffix}"
        return candidate
    if path.exists():
        raise FileExistsError(f"{path} exists already: give a new file name, or a folder ending in /")
    return path


async def restore(settings: Settings, source: str) -> int:
    """Put a backup in place of the database; refused while anything uses it; the replaced file is kept."""
    backup = Path(source)
    try:
        done = await asyncio.to_thread(restore_backup, backup, settings.database_path)
    except RestoreRefused as exc:
        complain(f"error: {exc}")
        return EXIT_PROBLEM
    kept = f"; the replaced database is kept as {done.kept}" if done.kept else ""
    say(f"ok: restored {backup} to {done.database} (schema version {done.schema_version}){kept}")
    if not done.owner_kept:
        complain(
            f"warning: {done.database} could not be given the replaced file's owner (run restore as that "
            "user or as root); check that the bot can write it"
        )
    return 0


def _remove_copy(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        # Missing, or its folder is missing or a file: either way there is nothing to remove.
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            leftover.unlink()


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()
