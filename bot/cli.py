"""The terminal commands: check, health, describe, invite, backup, restore, copy-to-postgres."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from bot.core.images import CheckedImage
from bot.discord.heartbeat import heartbeat_age, heartbeat_path
from bot.domain.errors import BotError, ProviderError
from bot.domain.quota import Member
from bot.domain.tasks import DescribeRequest, Fault, Job, JobState, Route
from bot.invite import SCOPES, application_id_from_token, invite_url, permission_names, required_permissions
from bot.providers.registry import BY_NAME, PROVIDERS, build_providers
from bot.providers.spec import BuildContext, ProviderSpec
from bot.settings import Settings, no_provider_problem
from bot.store.postgres.url import is_postgres_url, redact
from bot.store.sqlite.database import Database, DatabaseUnusable, migration_files
from bot.store.sqlite.file_access import storage_problem
from bot.store.sqlite.restore import RestoreRefused, utc_stamp
from bot.store.sqlite.restore import restore as restore_backup
from bot.ui.words import NEGATIVE_PROMPT, Words
from bot.wiring import build_core

# Every fault an admin must fix ends a command with this status (as a bad setting does).
EXIT_PROBLEM = 2
# A check must not hang on a server that does not answer (a firewall that drops packets).
CHECK_CONNECT_TIMEOUT = 5.0


def say(line: str) -> None:
    print(line)


def complain(line: str) -> None:
    print(line, file=sys.stderr)


async def check(settings: Settings, *, live: bool) -> int:
    """Validate settings, database and providers; one line per finding, non-zero on any problem."""
    problems = list(settings.run_problems())
    if settings.database_url is not None:
        problems += await _check_postgres(settings.database_url.get_secret_value())
    else:
        problems += await _check_database(settings.database_path)
    if settings.shard_count is not None:
        runs = ", ".join(map(str, settings.shard_ids)) if settings.shard_ids else "all"
        say(f"ok: this process runs shards {runs} of {settings.shard_count} (SHARD_IDS, SHARD_COUNT)")
    configured = settings.configured_providers
    for spec in PROVIDERS:
        if spec.name in configured:
            say(f"ok: {spec.name} is configured")
        else:
            say(f"--: {spec.name} is not configured ({spec.enabled_by} is empty)")
    if settings.default_describe_provider:
        say(f"ok: /describe uses {settings.default_describe_provider} by default")
    if live and configured:
        async with aiohttp.ClientSession() as session:
            context = BuildContext(session=session, request_timeout=settings.request_timeout_seconds)
            for name, provider in build_providers(settings.providers, context).items():
                try:
                    await provider.key_checker.check_key()
                except ProviderError as exc:
                    problems.append(_key_problem(BY_NAME[name], exc))
                else:
                    say(f"ok: {name} {BY_NAME[name].live_check_passed(settings.providers[name])}")
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


async def _check_postgres(url: str) -> list[str]:
    """Connect (within a few seconds), migrate and write PostgreSQL; return what went wrong, one line each."""
    from bot.domain.errors import StoreUnavailable  # noqa: PLC0415
    from bot.store.postgres.database import (  # noqa: PLC0415 (only with DATABASE_URL)
        DatabaseUnreachable,
        DatabaseUnusable,
        PgDatabase,
    )
    from bot.store.postgres.database import migration_files as pg_migrations  # noqa: PLC0415

    try:
        db = await PgDatabase.open(url, connect_timeout=CHECK_CONNECT_TIMEOUT, max_size=2)
        try:
            version = await db.schema_version()
            await db.set_meta("last_check", str(time.time()))
            jobs = await db.fetchrow(
                "SELECT count(*) AS unfinished, count(DISTINCT owner) AS drivers FROM jobs WHERE finished_at IS NULL"
            )
        finally:
            await db.close()
    except (DatabaseUnreachable, DatabaseUnusable, StoreUnavailable) as exc:
        return [str(exc)]
    except Exception as exc:  # any other failure here is the finding to report
        return [f"DATABASE_URL {redact(url)} cannot be used: {_one_line(exc)}"]
    say(
        f"ok: PostgreSQL at {redact(url)} (DATABASE_URL) is reachable and writable, schema version "
        f"{version}/{len(pg_migrations())} (current)"
    )
    if jobs is not None and jobs["unfinished"]:
        say(f"ok: {jobs['unfinished']} unfinished tasks, driven by {jobs['drivers']} process(es)")
    return []


def _key_problem(spec: ProviderSpec[Any], exc: ProviderError) -> str:
    detail = f" ({_one_line(exc.detail)})" if exc.detail else ""
    if exc.fault in (Fault.BUSY, Fault.UNREACHABLE):
        return f"{spec.name} could not be asked{detail}: the key was not tried; check the network and {spec.address_setting}"
    line = _admin_line(spec, exc.fault, detail)
    return line or f"{spec.name} did not confirm {spec.key_setting}: {exc.fault.value}{detail}"


def _admin_line(spec: ProviderSpec[Any], fault: Fault, detail: str = "") -> str | None:
    """Say which of the admin's settings a provider's fault points at, and what to do; None for others."""
    if fault is Fault.MISCONFIGURED:
        return f"{spec.name} rejected {spec.key_setting}{detail}: copy the key again from the provider's dashboard and check the plan"
    if fault is Fault.MODEL_NOT_FOUND:
        return f"{spec.name} does not have the model named in {spec.model_setting}{detail}: pull it on the server or name one it lists"
    if fault is Fault.MODEL_BLIND:
        return f"{spec.name}'s model ({spec.model_setting}) cannot read images{detail}: name a vision model"
    if fault is Fault.INCOMPATIBLE:
        return (
            f"{spec.name} does not answer like the API the bot speaks{detail}: check {spec.address_setting} "
            "(OpenAI-compatible addresses usually end in /v1)"
        )
    return None


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

    def __init__(self, words: Words) -> None:
        self._words = words
        self.final: Job | None = None
        self.done = asyncio.Event()

    async def report(self, job: Job) -> bool:
        complain(f"{self._words.state(job.state)} ({job.provider})")
        if job.finished:
            self.final = job
            self.done.set()
        return True

    async def forget(self, job_id: str) -> None:
        return None


async def describe(
    settings: Settings, source: str, provider_name: str | None, request: DescribeRequest | None = None
) -> int:
    """Describe one image through the same core the bot uses, and print the prompt (or prompts)."""
    if not settings.configured_providers:
        complain(f"error: {no_provider_problem()}")
        return 2
    # The terminal's own run: no quota to keep, one task, no cache (the point is to try the key).
    terminal = settings.model_copy(
        update={
            "quota_describe_per_day": -1,
            "quota_imagine_per_day": -1,
            "max_inflight_per_user": 1,
            "max_inflight_per_provider": 1,
            "describe_cache_days": 0,
            "webhook_public_url": None,
        }
    )
    words = Words()
    reporter = _TerminalReporter(words)
    db = await Database.open(":memory:")
    try:
        async with aiohttp.ClientSession() as session:
            # One provider is tried, the one asked for (or the default): its fault is what the admin needs.
            core = build_core(terminal, session, db, reporter_for=lambda needs: reporter, fall_back=False)
            try:
                image = await _read_source(core.service.fetch_url, core.service.check_bytes, source)
                name = core.service.describe_provider(provider_name, request)
                route = Route(channel_id=None, via="channel")
                await core.service.describe(Member(0, 0), image, name, route, request)
                await reporter.done.wait()
            except OSError as exc:
                complain(f"error: cannot read {source}: {exc.strerror}")
                return 2
            except BotError as exc:
                complain(f"error: {words.error(exc)}")
                return 1
            finally:
                await core.runner.shutdown(grace=1)
                await core.close()
    finally:
        await db.close()
    final = reporter.final
    assert final is not None
    if final.state is JobState.COMPLETED and final.suggestions:
        for number, suggestion in enumerate(final.suggestions, start=1):
            say(suggestion.prompt if len(final.suggestions) == 1 else f"{number}. {suggestion.prompt}")
            if suggestion.negative:
                say(f"   {words.say(NEGATIVE_PROMPT)}: {suggestion.negative}")
        return 0
    assert final.fault is not None
    complain(f"error: {_terminal_fault(settings, final.provider, final.fault, words)}")
    return 1


async def _read_source(
    fetch_url: Callable[[str], Awaitable[CheckedImage]],
    check_bytes: Callable[[bytes], Awaitable[CheckedImage]],
    source: str,
) -> CheckedImage:
    if source.startswith(("http://", "https://")):
        return await fetch_url(source)
    return await check_bytes(await asyncio.to_thread(Path(source).read_bytes))


def _terminal_fault(settings: Settings, provider: str, fault: Fault, words: Words) -> str:
    """Say what went wrong for the admin at the terminal: the setting to look at, where there is one."""
    spec = BY_NAME[provider]
    if fault is Fault.UNREACHABLE:
        section = settings.providers[provider]
        # The section's field behind the setting named in the spec (FREEPIK_BASE_URL -> base_url).
        address = getattr(section, spec.address_setting.removeprefix(spec.env_prefix).lower(), "")
        return f"{provider} could not be reached at {address}: check the network and {spec.address_setting}"
    return _admin_line(spec, fault) or words.fault(provider, fault)


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
    if settings.database_url is not None:
        complain(
            "error: DATABASE_URL is set, so the data is in PostgreSQL: back it up with pg_dump, "
            'e.g. pg_dump --format=custom --file=bot.dump "$DATABASE_URL"'
        )
        return EXIT_PROBLEM
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
    if settings.database_url is not None:
        complain(
            "error: DATABASE_URL is set, so the data is in PostgreSQL: stop every bot process and restore "
            'with pg_restore, e.g. pg_restore --clean --if-exists --dbname="$DATABASE_URL" bot.dump'
        )
        return EXIT_PROBLEM
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


async def copy_to_postgres(settings: Settings, url: str) -> int:
    """Copy the SQLite database (DATABASE_PATH) into the empty PostgreSQL database at `url`, and say what next."""
    if not is_postgres_url(url):
        complain(
            "error: the URL must be a PostgreSQL URL, postgresql://user:password@host:5432/database "
            "(quote it in the shell if the password has special characters)"
        )
        return EXIT_PROBLEM
    source = settings.database_path
    if not await asyncio.to_thread(source.is_file):
        complain(f"error: there is no SQLite database at {source} (DATABASE_PATH) to copy")
        return EXIT_PROBLEM
    from bot.store.postgres.copy import CopyRefused, copy_sqlite_to_postgres  # noqa: PLC0415

    try:
        copied = await copy_sqlite_to_postgres(source, url)
    except CopyRefused as exc:
        complain(f"error: {exc}")
        return EXIT_PROBLEM
    except Exception as exc:  # any other failure is one line; the copy's transaction left nothing behind
        complain(f"error: the copy into {redact(url)} failed, nothing was copied: {_one_line(exc)}")
        return 1
    say(f"ok: copied {copied.total} rows from {source} into {copied.target}; the counts match on both sides:")
    for table, count in copied.counts.items():
        say(f"  {table}: {count}")
    say(
        f"next: set DATABASE_URL={copied.target} in .env (with the real password) and start the bot; "
        f"it no longer reads or writes {source}, which you may keep as the copy's source; to run several "
        "processes, give each SHARD_COUNT and its own SHARD_IDS (README: Running several processes)"
    )
    return 0


def _remove_copy(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        # Missing, or its folder is missing or a file: either way there is nothing to remove.
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            leftover.unlink()


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()
