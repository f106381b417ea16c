"""What an admin does and meets with DATABASE_URL, through the real process: check, backup and restore,
PostgreSQL unreachable (one line per attempt, SIGTERM obeyed, the password never shown), and
copy-to-postgres from a real SQLite file made by the real bot."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from bot.domain.quota import Member
from bot.domain.rules import ChannelRule, SpoilerRule
from bot.domain.tasks import TaskKind
from bot.store.postgres.database import CONNECT_TIMEOUT, PgDatabase, migration_files
from tests.conftest import Harness, eventually, png_bytes
from tests.processes import (
    BotProcess,
    Finished,
    bot_env,
    run_command,
    single_error_line,
)

PASSWORD = "hunter2-very-secret"
SIGTERM_BUDGET = 10.0
TABLES = (
    "meta",
    "usage",
    "quota_limits",
    "quota_grants",
    "audit",
    "jobs",
    "job_images",
    "describe_cache",
    "channel_rules",
    "blocklist",
    "task_durations",
)
FORGOTTEN_MEMBER = 777


def one_error_line(result: Finished, *, code: int = 2) -> str:
    line = single_error_line(result, code=code)
    assert PASSWORD not in result.output
    return line


@dataclass
class SilentServer:
    """A port that accepts connections and never says a word (a server that hangs)."""

    port: int
    # How long each client kept its connection before giving up: the client's own timeout, whatever time
    # its process took to start on a loaded machine.
    waited: list[float] = field(default_factory=list)


@pytest.fixture
async def silent_server() -> AsyncIterator[SilentServer]:
    held: list[asyncio.StreamWriter] = []
    silent = SilentServer(0)

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        accepted = time.monotonic()
        await reader.read()  # until the client closes its end
        silent.waited.append(time.monotonic() - accepted)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    silent.port = int(server.sockets[0].getsockname()[1])
    try:
        yield silent
    finally:
        for writer in held:
            writer.close()
        server.close()


# --- check, backup, restore --------------------------------------------------------------------------


async def test_check_knows_postgres_and_says_unreachable_in_one_line_without_the_password(
    tmp_path: Path, pg_url: str, silent_server: SilentServer
) -> None:
    database = tmp_path / "bot.sqlite3"
    ok, refused, hanging, missing = await asyncio.gather(
        run_command("check", env=bot_env(database, DATABASE_URL=pg_url), cwd=tmp_path),
        run_command(
            "check",
            env=bot_env(database, DATABASE_URL=f"postgresql://bot:{PASSWORD}@127.0.0.1:9/bot"),
            cwd=tmp_path,
        ),
        run_command(
            "check",
            env=bot_env(
                database, DATABASE_URL=f"postgresql://bot:{PASSWORD}@127.0.0.1:{silent_server.port}/bot"
            ),
            cwd=tmp_path,
        ),
        run_command(
            "check",
            env=bot_env(database, DATABASE_URL=pg_url.replace("/test?", "/no_such_database_here?")),
            cwd=tmp_path,
        ),
    )
    assert ok.code == 0, ok.output
    assert "ok: PostgreSQL at postgresql://postgres@127.0.0.1:5432/test?search_path=" in ok.output
    version = len(migration_files())
    assert (
        f"(DATABASE_URL) is reachable and writable, schema version {version}/{version} (current)" in ok.output
    )
    assert not database.exists()  # the SQLite file is not touched with DATABASE_URL

    line = one_error_line(refused)
    assert line.startswith("error: DATABASE_URL postgresql://bot:***@127.0.0.1:9/bot cannot be reached: ")
    line = one_error_line(hanging)
    assert line == (
        f"error: DATABASE_URL postgresql://bot:***@127.0.0.1:{silent_server.port}/bot cannot be reached: "
        "no answer in time (check the host and port, and any firewall between)"
    )
    # The check's own connect timeout, not the bot's longer one (nor a hang, which run_command would end).
    await eventually(lambda: bool(silent_server.waited), "the check to close its connection")
    assert max(silent_server.waited) < CONNECT_TIMEOUT, silent_server.waited
    line = one_error_line(missing)
    assert 'database "no_such_database_here" does not exist; create it first' in line


async def test_backup_and_restore_with_postgres_point_at_pg_dump_and_pg_restore(tmp_path: Path) -> None:
    env = bot_env(tmp_path / "bot.sqlite3", DATABASE_URL=f"postgresql://bot:{PASSWORD}@db:5432/bot")
    backup, restore = await asyncio.gather(
        run_command("backup", str(tmp_path / "backups") + "/", env=env, cwd=tmp_path),
        run_command("restore", str(tmp_path / "x.sqlite3"), env=env, cwd=tmp_path),
    )
    assert "back it up with pg_dump" in one_error_line(backup)
    assert "pg_restore" in one_error_line(restore)
    assert not (tmp_path / "backups").exists()


async def test_postgres_unreachable_at_start_is_retried_one_line_per_attempt_and_sigterm_obeyed(
    tmp_path: Path,
) -> None:
    env = bot_env(tmp_path / "bot.sqlite3", DATABASE_URL=f"postgresql://bot:{PASSWORD}@127.0.0.1:9/bot")
    process = await BotProcess.start("run", env=env, cwd=tmp_path)
    try:
        warnings = await process.wait_for_lines(r"WARNING .*DATABASE_URL", count=2, timeout=30)
        assert warnings[0].endswith(" s")
        assert "trying again in" in warnings[0]
        assert "postgresql://bot:***@127.0.0.1:9/bot cannot be reached" in warnings[0]
        sent = process.signal()
        result = await process.finished(timeout=30, since=sent)
        assert result.code == 0, result.output
        assert result.seconds < SIGTERM_BUDGET
        assert "Traceback" not in result.output
        assert PASSWORD not in result.output
    finally:
        await process.kill()


# --- copy-to-postgres ------------------------------------------------------------------------------------


async def _a_real_sqlite_database(harness: Harness) -> Path:
    """Use the real bot on SQLite as members and an admin would, so every table has rows; return the file."""
    bot = await harness.start_bot(describe_provider="freepik")
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]
    for colour in colours:
        await harness.interact(bot, harness.describe_payload(png_bytes(colour=colour)))
    await harness.interact(bot, harness.describe_payload(png_bytes(colour=colours[0])))  # from the cache
    await harness.interact(bot, harness.discord.slash("imagine", {"prompt": "a lighthouse at dusk"}))
    guild = harness.discord.guild_ids[0]
    await bot.core.quotas.set_limit(guild, "server", guild, TaskKind.DESCRIBE, 40, 99)
    await bot.core.quotas.grant(guild, harness.discord.default_user_id, TaskKind.IMAGINE, 2, 99)
    await bot.core.rules.set_channel_rule(
        guild, ChannelRule(0, imagine=True, spoilers=SpoilerRule.ALWAYS), 99
    )
    await bot.core.rules.add_blocked(guild, ["grim"], 99)
    # A member who asked to be forgotten today: their use counts under a stand-in id (and the key's in meta).
    await harness.interact(
        bot, harness.describe_payload(png_bytes(colour=(7, 7, 7)), user_id=FORGOTTEN_MEMBER)
    )
    await bot.core.service.forget(Member(guild, FORGOTTEN_MEMBER))
    await harness.stop_bot(bot)  # what the poll schedule learned is saved (task_durations)
    # The harness keeps the bot's file open until the test ends: copy it as `backup` would.
    source = harness.tmp_path / "copied" / "bot.sqlite3"
    await bot.core.db.backup_to(source)  # type: ignore[union-attr]
    return source


def _sqlite_counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES}


async def test_copy_to_postgres_copies_every_table_and_refuses_a_database_that_is_not_empty(
    pg_url: str, harness: Harness
) -> None:
    source = await _a_real_sqlite_database(harness)
    counts = _sqlite_counts(source)
    assert all(counts.values()), counts  # every table has something to copy
    env = bot_env(source)
    copied = await run_command("copy-to-postgres", pg_url, env=env, cwd=harness.tmp_path)
    assert copied.code == 0, copied.output
    print(copied.output)
    assert f"ok: copied {sum(counts.values())} rows from {source} into " in copied.output
    for table, count in counts.items():
        assert f"  {table}: {count}" in copied.lines
    assert any(line.startswith("next: set DATABASE_URL=") for line in copied.lines)

    conn = await asyncpg.connect(pg_url)
    try:
        for table, count in counts.items():
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == count
        with sqlite3.connect(source) as lite:
            image = lite.execute("SELECT data FROM job_images WHERE role = 'output'").fetchone()[0]
        assert await conn.fetchval("SELECT data FROM job_images WHERE role = 'output'") == image
    finally:
        await conn.close()

    # The bot on PostgreSQL sees the same member standing, and new rows follow the copied ids.
    pg = await PgDatabase.open(pg_url)
    try:
        bot = await harness.start_bot(database_url=pg_url, describe_provider="freepik")
        member = Member(harness.discord.guild_ids[0], harness.discord.default_user_id)
        statuses = {
            status.kind: (status.used, status.limit) for status in await bot.core.quotas.status(member)
        }
        assert statuses == {TaskKind.DESCRIBE: (3, 40), TaskKind.IMAGINE: (1, 12)}
        forgotten = await bot.core.quotas.status(Member(harness.discord.guild_ids[0], FORGOTTEN_MEMBER))
        assert [status.used for status in forgotten if status.kind is TaskKind.DESCRIBE] == [1]
        rules = await bot.core.rules.channel_rules(harness.discord.guild_ids[0])
        assert rules[0].spoilers is SpoilerRule.ALWAYS
        assert await bot.core.rules.blocklist(harness.discord.guild_ids[0]) == [("grim", "grim")]
        # The copied cache answers on PostgreSQL (the first image again: nothing sent to Freepik).
        harness.freepik.reset()
        await harness.interact(bot, harness.describe_payload(png_bytes(colour=(200, 0, 0))))
        assert harness.freepik.count("POST") == 0
        await harness.interact(bot, harness.describe_payload(png_bytes(colour=(90, 90, 250))))
        assert await pg.fetchval("SELECT max(id) FROM usage") == counts["usage"] + 2  # cached, then new
    finally:
        await pg.close()

    again = await run_command("copy-to-postgres", pg_url, env=env, cwd=harness.tmp_path)
    assert "is not empty (usage has rows): copy into a new, empty database" in one_error_line(again)


async def test_copy_to_postgres_says_in_one_line_what_it_cannot_do(tmp_path: Path, pg_url: str) -> None:
    source = tmp_path / "bot.sqlite3"
    env = bot_env(source)
    none_yet, not_postgres = await asyncio.gather(
        run_command("copy-to-postgres", pg_url, env=env, cwd=tmp_path),
        run_command("copy-to-postgres", f"mysql://bot:{PASSWORD}@db/bot", env=env, cwd=tmp_path),
    )
    assert "there is no SQLite database at" in one_error_line(none_yet)
    assert "must be a PostgreSQL URL" in one_error_line(not_postgres)

    # Empty files (the copy makes them the bot's schema first); one each, as a copy holds its file.
    other = tmp_path / "other" / "bot.sqlite3"
    other.parent.mkdir()
    for path in (source, other):
        sqlite3.connect(path).close()
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("CREATE TABLE invoices (id INTEGER)")
    finally:
        await conn.close()
    unreachable, foreign = await asyncio.gather(
        run_command(
            "copy-to-postgres", f"postgresql://bot:{PASSWORD}@127.0.0.1:9/bot", env=env, cwd=tmp_path
        ),
        run_command("copy-to-postgres", pg_url, env=bot_env(other), cwd=tmp_path),
    )
    assert "DATABASE_URL postgresql://bot:***@127.0.0.1:9/bot cannot be reached" in one_error_line(
        unreachable
    )
    assert "it has tables of something else: invoices" in one_error_line(foreign)
