"""Every fault an admin can cause or meet at the edges, through the real process: one line, never a hang.

Each test runs `python -m bot` (or one of its commands) as its own process and asserts the exit status,
how long it took, and the line it printed, and that no traceback reached the admin.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bot.store.sqlite.database import migration_files
from bot.store.sqlite.file_access import in_container
from bot.store.sqlite.use_lock import lock_path
from tests.fakes.discord import FakeDiscord
from tests.processes import (
    IS_ROOT,
    BotProcess,
    Finished,
    bot_env,
    give_to_bot_user,
    run_command,
    single_error_line,
    the_bot_uid,
)

SIGTERM_BUDGET = 10.0


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_error_line(result: Finished, *, code: int = 2) -> str:
    """Assert the process ended with `code` within 10 s, printed exactly one error line and no traceback."""
    line = single_error_line(result, code=code)
    assert result.seconds < SIGTERM_BUDGET, result.seconds
    return line


async def run_as_admin_would(
    command: str, database: Path, cwd: Path, *, as_bot_user: bool = False
) -> Finished:
    """Run one of the commands that open the database: the bot itself, check, or backup."""
    env = bot_env(database)
    if command == "run":
        process = await BotProcess.start("run", env=env, cwd=cwd, as_bot_user=as_bot_user)
        return await process.finished(timeout=30)
    args = ["backup", str(cwd / "backups") + "/"] if command == "backup" else [command]
    return await run_command(*args, env=env, cwd=cwd, as_bot_user=as_bot_user)


OPENING_COMMANDS = pytest.mark.parametrize("command", ["run", "check", "backup"])
# Where no database exists yet, backup has nothing to copy and says so; the bot and check create it.
CREATING_COMMANDS = pytest.mark.parametrize("command", ["run", "check"])


def fix_for(culprit: Path) -> str:
    """The fix the line must name: a chown to the bot's user, or a chmod when the bot owns it already."""
    # In a container (this test may run in one) the line adds where a bind mount's fix is run.
    where = " (for a bind-mounted folder, on the host's folder)" if in_container() else ""
    if IS_ROOT:
        folder = culprit if culprit.is_dir() else culprit.parent
        return f"`chown -R {the_bot_uid()}:{the_bot_uid()} {folder}`{where}"
    return f"`chmod u+rwX {culprit}`{where}"


def cannot_write_line(database: Path, culprit: Path, mode: int) -> str:
    """The line for a file or folder the bot cannot write: its owner and mode, the bot's uid, the fix."""
    what = "folder" if culprit.is_dir() else "file"
    return (
        f"error: DATABASE_PATH {database} cannot be written: the {what} {culprit} belongs to uid "
        f"{culprit.stat().st_uid} (mode {mode:o}) and the bot runs as uid {the_bot_uid()}; fix it with "
        f"{fix_for(culprit)}"
    )


# --- the database file and its folder ---------------------------------------------------------------


@OPENING_COMMANDS
async def test_a_database_file_the_bot_cannot_write_is_one_line_with_the_owner_and_the_fix(
    tmp_path: Path, command: str
) -> None:
    """E.g. restored with `docker cp`, which keeps the host's owner."""
    folder = tmp_path / "data"
    folder.mkdir()
    give_to_bot_user(folder)
    database = folder / "bot.sqlite3"
    sqlite3.connect(database).close()
    database.chmod(0o644 if IS_ROOT else 0o444)  # root's file (as root), or a read-only one of ours
    if command == "backup":
        (tmp_path / "backups").mkdir()
        give_to_bot_user(tmp_path / "backups")
    before = digest(database)
    result = await run_as_admin_would(command, database, tmp_path, as_bot_user=True)
    line = one_error_line(result)
    assert line == cannot_write_line(database, database, stat.S_IMODE(database.stat().st_mode))
    assert digest(database) == before


def _bot_users_database_with_a_lock_file(tmp_path: Path, mode: int) -> tuple[Path, Path]:
    """A database and a backups folder of the bot's user, and a lock file of this process's user."""
    folder = tmp_path / "data"
    folder.mkdir()
    give_to_bot_user(folder)
    database = folder / "bot.sqlite3"
    sqlite3.connect(database).close()
    give_to_bot_user(database)
    (tmp_path / "backups").mkdir()
    give_to_bot_user(tmp_path / "backups")
    lock = lock_path(database)
    lock.touch(mode=mode)
    return database, lock


@pytest.mark.skipif(not IS_ROOT, reason="only root can leave a lock file of another user")
@pytest.mark.parametrize("command", ["check", "backup"])
async def test_a_lock_file_left_by_root_does_not_keep_the_bot_out(tmp_path: Path, command: str) -> None:
    """E.g. `backup` or `restore` run as root on the host before the bot's first start in its container."""
    database, _ = _bot_users_database_with_a_lock_file(tmp_path, 0o644)  # as a root `backup` makes it
    result = await run_as_admin_would(command, database, tmp_path, as_bot_user=True)
    assert result.code == 0, result.output
    assert "Traceback" not in result.output, result.output


@pytest.mark.skipif(
    IS_ROOT, reason="the tests' bot user may read every file (it needs to, to run this interpreter)"
)
@OPENING_COMMANDS
async def test_a_lock_file_the_bot_cannot_read_is_one_line_with_the_owner_and_the_fix(
    tmp_path: Path, command: str
) -> None:
    # Unreadable to its owner, as another user's private file is to the bot.
    database, lock = _bot_users_database_with_a_lock_file(tmp_path, 0o200)
    try:
        result = await run_as_admin_would(command, database, tmp_path, as_bot_user=True)
    finally:
        lock.chmod(0o600)
    line = one_error_line(result)
    assert line == cannot_write_line(database, lock, 0o200)


@CREATING_COMMANDS
async def test_a_folder_not_owned_by_the_bot_is_one_line_with_the_owner_and_the_fix(
    tmp_path: Path, command: str
) -> None:
    """E.g. `./data` bind-mounted into the container without handing it to uid 10001 first."""
    folder = tmp_path / "data"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755 if IS_ROOT else 0o555)
    database = folder / "bot.sqlite3"
    try:
        result = await run_as_admin_would(command, database, tmp_path, as_bot_user=True)
    finally:
        folder.chmod(0o755)
    line = one_error_line(result)
    assert line == cannot_write_line(database, folder, 0o755 if IS_ROOT else 0o555)
    assert not database.exists()


@OPENING_COMMANDS
async def test_a_database_path_that_is_a_folder_is_one_line(tmp_path: Path, command: str) -> None:
    database = tmp_path / "data"
    database.mkdir()
    result = await run_as_admin_would(command, database, tmp_path)
    line = one_error_line(result)
    assert line == (
        f"error: DATABASE_PATH {database} is a folder, not a file: point it at a file inside it, "
        f"e.g. {database / 'bot.sqlite3'}"
    )


@CREATING_COMMANDS
async def test_a_database_path_under_a_file_is_one_line(tmp_path: Path, command: str) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the folder should be")
    database = blocker / "bot.sqlite3"
    result = await run_as_admin_would(command, database, tmp_path)
    line = one_error_line(result)
    assert line == (
        f"error: DATABASE_PATH {database} cannot be created: {blocker} is a file, not a folder; "
        "point DATABASE_PATH elsewhere or move that file"
    )


def not_sqlite(path: Path) -> None:
    path.write_bytes(b"these are somebody's notes, not a database\n" * 200)


def damaged(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [(str(i), "x" * 100) for i in range(200)])
    conn.commit()
    conn.close()
    with path.open("r+b") as file:  # the schema page, right after the 100-byte header
        file.seek(100)
        file.write(os.urandom(3000))


def newer(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute(f"PRAGMA user_version = {len(migration_files()) + 5}")
    conn.commit()
    conn.close()


@OPENING_COMMANDS
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(not_sqlite, "is not an SQLite database, or its first page is damaged", id="not-sqlite"),
        pytest.param(damaged, "is damaged (database disk image is malformed)", id="damaged"),
        pytest.param(
            newer, f"is at schema version {len(migration_files()) + 5}, newer than this bot", id="newer"
        ),
    ],
)
async def test_a_database_the_bot_cannot_use_is_one_line_and_left_untouched(
    tmp_path: Path, command: str, make: object, expected: str
) -> None:
    database = tmp_path / "bot.sqlite3"
    make(database)  # type: ignore[operator]
    before = digest(database)
    result = await run_as_admin_would(command, database, tmp_path)
    line = one_error_line(result)
    assert line.startswith(f"error: DATABASE_PATH {database} {expected}"), line
    assert digest(database) == before
    assert not database.with_name("bot.sqlite3-wal").exists()


# --- Discord ---------------------------------------------------------------------------------------------


async def stops_cleanly_on_sigterm(process: BotProcess) -> Finished:
    """Send SIGTERM and assert the process exits 0 within 10 s of it, with no traceback."""
    sent = process.signal()
    result = await process.finished(timeout=30, since=sent)
    assert result.code == 0, result.output
    assert result.seconds < SIGTERM_BUDGET
    assert "Traceback" not in result.output
    return result


async def healthy(database: Path, cwd: Path) -> bool:
    result = await run_command("health", env=bot_env(database), cwd=cwd)
    return result.code == 0


async def test_discord_unreachable_at_start_warns_per_attempt_is_unhealthy_and_obeys_sigterm(
    tmp_path: Path,
) -> None:
    database = tmp_path / "bot.sqlite3"
    process = await BotProcess.start("run", env=bot_env(database), cwd=tmp_path)
    try:
        warnings = await process.wait_for_lines(r"WARNING .*Discord cannot be reached", count=2, timeout=30)
        assert "Connection refused" in warnings[0]
        assert "trying again in" in warnings[0]
        assert not await healthy(database, tmp_path)
        await stops_cleanly_on_sigterm(process)
    finally:
        await process.kill()


async def test_discord_lost_mid_run_warns_per_attempt_is_unhealthy_and_obeys_sigterm(
    tmp_path: Path, fake_discord: FakeDiscord
) -> None:
    database = tmp_path / "bot.sqlite3"
    env = bot_env(database, FAKE_DISCORD_URL=fake_discord.base_url)
    process = await BotProcess.start("run", env=env, cwd=tmp_path)
    try:
        await fake_discord.wait_connected(timeout=30)
        await process.wait_for_lines("resumed|commands", timeout=30)
        await fake_discord.close()  # Discord goes away: the gateway drops and nothing answers any more
        lines = await process.wait_for_lines(r"WARNING .*Discord connection lost", count=2, timeout=30)
        assert "reconnect in" in lines[0]
        assert not await healthy(database, tmp_path)
        await stops_cleanly_on_sigterm(process)
    finally:
        await process.kill()


async def test_sigterm_while_the_gateway_never_answers_ends_within_ten_seconds(
    tmp_path: Path, fake_discord: FakeDiscord
) -> None:
    fake_discord.silent_gateway = True  # the socket opens, HELLO never comes
    database = tmp_path / "bot.sqlite3"
    process = await BotProcess.start(
        "run", env=bot_env(database, FAKE_DISCORD_URL=fake_discord.base_url), cwd=tmp_path
    )
    try:
        await fake_discord.wait_for_call(lambda call: "/applications/" in call.path, timeout=30)
        await process.wait_for_lines("commands", timeout=30)
        await stops_cleanly_on_sigterm(process)
    finally:
        await process.kill()


async def test_sigterm_of_an_idle_connected_bot_ends_within_ten_seconds(
    tmp_path: Path, fake_discord: FakeDiscord
) -> None:
    database = tmp_path / "bot.sqlite3"
    process = await BotProcess.start(
        "run", env=bot_env(database, FAKE_DISCORD_URL=fake_discord.base_url), cwd=tmp_path
    )
    try:
        await fake_discord.wait_connected(timeout=30)
        result = await stops_cleanly_on_sigterm(process)
    finally:
        await process.kill()
    assert "finishing in-flight work and closing" in result.output


@pytest.mark.parametrize("where", ["login", "gateway"])
async def test_a_token_discord_refuses_is_one_line_naming_discord_token(
    tmp_path: Path, fake_discord: FakeDiscord, where: str
) -> None:
    if where == "login":
        fake_discord.fail_next("GET", r"/users/@me$", status=401, message="401: Unauthorized", times=5)
    else:
        fake_discord.identify_close_code = 4004  # Authentication failed
    database = tmp_path / "bot.sqlite3"
    process = await BotProcess.start(
        "run", env=bot_env(database, FAKE_DISCORD_URL=fake_discord.base_url), cwd=tmp_path
    )
    result = await process.finished(timeout=30)
    line = one_error_line(result)
    assert line == "error: Discord refused DISCORD_TOKEN: copy the bot token again from the developer portal"
    assert "voice will NOT be supported" not in result.output


# --- backup and restore ----------------------------------------------------------------------------------


def kept_copies(folder: Path) -> list[Path]:
    return list(folder.glob("bot.sqlite3.before-restore-*"))


def rows(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM audit").fetchone()[0])
    finally:
        conn.close()


async def make_database(database: Path, audit_rows: int, cwd: Path) -> None:
    """Make a real bot database (migrated by the bot's own check) holding `audit_rows` rows."""
    result = await run_command("check", env=bot_env(database), cwd=cwd)
    assert result.code == 0, result.output
    conn = sqlite3.connect(database)
    conn.executemany(
        "INSERT INTO audit (guild_id, actor_id, action, detail, at) VALUES (1, 2, 'set', '{}', ?)",
        [(float(i),) for i in range(audit_rows)],
    )
    conn.commit()
    conn.close()


async def test_backup_into_a_new_folder_writes_timestamped_files_and_never_overwrites(tmp_path: Path) -> None:
    database = tmp_path / "data" / "bot.sqlite3"
    await make_database(database, 3, tmp_path)
    folder = tmp_path / "volume" / "backups"
    first = await run_command("backup", str(folder) + "/", env=bot_env(database), cwd=tmp_path)
    second = await run_command("backup", str(folder) + "/", env=bot_env(database), cwd=tmp_path)
    for result in (first, second):
        assert result.code == 0, result.output
        assert result.seconds < SIGTERM_BUDGET
        assert "Traceback" not in result.output
    files = sorted(folder.iterdir())
    assert len(files) == 2, files
    for file in files:
        assert file.name.startswith("bot-")
        assert file.suffix == ".sqlite3"
        assert len(file.stem.split("-")[1]) == 8  # bot-YYYYMMDD-HHMMSS[-N]
        assert rows(file) == 3
    again = await run_command("backup", str(files[0]), env=bot_env(database), cwd=tmp_path)
    assert one_error_line(again) == (
        f"error: {files[0]} exists already: give a new file name, or a folder ending in /"
    )


def leave_wal_after_unclean_stop(database: Path, extra_rows: int) -> None:
    """Write rows the way a running bot does (WAL) and stop without closing, as a kill would."""
    code = f"""
import os, sqlite3
conn = sqlite3.connect({str(database)!r})
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA wal_autocheckpoint=0")
conn.executemany("INSERT INTO audit (guild_id, actor_id, action, detail, at) VALUES (1, 2, 'late', '{{}}', ?)",
                 [(float(i),) for i in range({extra_rows})])
conn.commit()
os._exit(0)
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


async def test_restore_after_an_unclean_stop_gives_the_backups_rows_exactly(tmp_path: Path) -> None:
    database = tmp_path / "data" / "bot.sqlite3"
    await make_database(database, 40, tmp_path)
    backup = tmp_path / "bot-backup.sqlite3"
    made = await run_command("backup", str(backup), env=bot_env(database), cwd=tmp_path)
    assert made.code == 0, made.output
    leave_wal_after_unclean_stop(database, extra_rows=25)
    assert database.with_name("bot.sqlite3-wal").stat().st_size > 0
    database.chmod(0o640)
    result = await run_command("restore", str(backup), env=bot_env(database), cwd=tmp_path)
    assert result.code == 0, result.output
    assert result.seconds < SIGTERM_BUDGET
    assert "Traceback" not in result.output
    assert rows(database) == 40  # the backup's rows exactly: nothing replayed over them
    assert not database.with_name("bot.sqlite3-wal").exists()
    (kept,) = database.parent.glob("bot.sqlite3.before-restore-*[0-9]")
    assert rows(kept) == 65  # the replaced database, with its last writes
    assert stat.S_IMODE(database.stat().st_mode) == 0o640
    assert f"the replaced database is kept as {kept}" in result.output
    # And the bot starts on it: check migrates nothing and finds it writable.
    assert (await run_command("check", env=bot_env(database), cwd=tmp_path)).code == 0


async def test_restore_is_refused_while_the_bot_runs_and_allowed_once_it_was_killed(
    tmp_path: Path, fake_discord: FakeDiscord
) -> None:
    database = tmp_path / "bot.sqlite3"
    await make_database(database, 5, tmp_path)
    backup = tmp_path / "backup.sqlite3"
    assert (await run_command("backup", str(backup), env=bot_env(database), cwd=tmp_path)).code == 0
    env = bot_env(database, FAKE_DISCORD_URL=fake_discord.base_url)
    process = await BotProcess.start("run", env=env, cwd=tmp_path)
    try:
        await fake_discord.wait_connected(timeout=30)
        before = digest(database)
        refused = await run_command("restore", str(backup), env=env, cwd=tmp_path)
        assert one_error_line(refused).startswith(f"error: {database} is in use by a running bot")
        assert digest(database) == before
        assert not kept_copies(tmp_path)
    finally:
        await process.kill()  # kill -9: a crashed bot must not block a restore forever
    restored = await run_command("restore", str(backup), env=env, cwd=tmp_path)
    assert restored.code == 0, restored.output


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(damaged, "is damaged", id="damaged"),
        pytest.param(not_sqlite, "is not an SQLite database or is damaged", id="not-sqlite"),
        pytest.param(newer, "newer than this bot", id="newer"),
    ],
)
async def test_restore_of_a_bad_backup_is_refused_and_changes_nothing(
    tmp_path: Path, make: object, expected: str
) -> None:
    database = tmp_path / "bot.sqlite3"
    await make_database(database, 5, tmp_path)
    backup = tmp_path / "backup.sqlite3"
    make(backup)  # type: ignore[operator]
    before = digest(database)
    result = await run_command("restore", str(backup), env=bot_env(database), cwd=tmp_path)
    line = one_error_line(result)
    assert line.startswith(f"error: {backup} "), line
    assert expected in line
    assert line.endswith("nothing was changed")
    assert digest(database) == before
    assert not kept_copies(tmp_path)
