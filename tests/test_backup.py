"""`python -m bot backup PATH`: a consistent online copy while the bot keeps writing."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from bot.__main__ import main
from bot.store.sqlite.database import Database
from tests.conftest import eventually

ROWS_BEFORE = 300


@pytest.fixture
def database(env: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The database of a clean environment (the shared `env` fixture points DATABASE_PATH here)."""
    return tmp_path / "data" / "bot.sqlite3"


def read_rows(path: Path) -> tuple[str, dict[str, str]]:
    """Open a copy as a stranger would: return its integrity check and its meta rows."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    finally:
        conn.close()
    return integrity, rows


async def test_backup_while_writes_go_on_holds_every_row_committed_before(
    database: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = await Database.open(database)  # the running bot's connection
    try:
        for i in range(ROWS_BEFORE):
            await db.set_meta(f"before:{i:05d}", str(i))
        written: list[int] = []
        stop = asyncio.Event()

        async def keep_writing() -> None:
            i = 0
            while not stop.is_set():
                await db.set_meta(f"during:{i:05d}", str(i))
                written.append(i)
                i += 1

        writer = asyncio.create_task(keep_writing())
        await eventually(lambda: len(written) >= 3, "the writer under way before the backup starts")
        target = tmp_path / "backups" / "copy.sqlite3"
        started_with = len(written)
        # The CLI in another thread with its own event loop and connection, as a second process would be.
        code = await asyncio.to_thread(main, ["backup", str(target)])
        ended_with = len(written)
        await asyncio.sleep(0.02)
        stop.set()
        await writer
    finally:
        await db.close()

    assert code == 0
    assert ended_with > started_with, "the writer was not writing while the backup ran"
    out = capsys.readouterr().out
    assert f"ok: wrote a consistent copy of {database} to {target}" in out
    # One file, no partial copy or journal beside it: it can be moved or uploaded as it is.
    assert sorted(p.name for p in target.parent.iterdir()) == ["copy.sqlite3"]
    integrity, rows = read_rows(target)
    assert integrity == "ok"
    for i in range(ROWS_BEFORE):
        assert rows[f"before:{i:05d}"] == str(i)
    during = sorted(int(key.split(":")[1]) for key in rows if key.startswith("during:"))
    # A snapshot: every row up to some point and none after it, at least all rows written before the start.
    assert during == list(range(len(during)))
    assert len(during) >= started_with
    assert len(during) <= len(written)


async def test_backup_through_the_store_while_writing(tmp_path: Path) -> None:
    """Database.backup_to in the bot's own process: the same guarantees."""
    db = await Database.open(tmp_path / "bot.sqlite3")
    try:
        for i in range(50):
            await db.set_meta(f"before:{i}", str(i))
        stop = asyncio.Event()

        async def keep_writing() -> None:
            i = 0
            while not stop.is_set():
                await db.set_meta(f"during:{i}", str(i))
                i += 1
                under_way.set()

        under_way = asyncio.Event()
        writer = asyncio.create_task(keep_writing())
        await asyncio.wait_for(under_way.wait(), 15)
        await db.backup_to(tmp_path / "copy.sqlite3")
        stop.set()
        await writer
    finally:
        await db.close()
    integrity, rows = read_rows(tmp_path / "copy.sqlite3")
    assert integrity == "ok"
    assert all(rows[f"before:{i}"] == str(i) for i in range(50))


async def test_backup_into_a_folder_names_the_copy_by_time(database: Path, tmp_path: Path) -> None:
    db = await Database.open(database)
    await db.set_meta("k", "v")
    await db.close()
    folder = tmp_path / "backups"
    folder.mkdir()
    assert await asyncio.to_thread(main, ["backup", str(folder)]) == 0
    (copy,) = folder.iterdir()
    assert copy.name.startswith("bot-")
    assert copy.suffix == ".sqlite3"
    assert time.strftime("%Y%m%d") in copy.name
    assert read_rows(copy) == ("ok", {**read_rows(database)[1]})


def test_backup_refuses_the_database_itself_and_a_missing_database(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backup", str(database.parent / "copy.sqlite3")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"error: there is no database at {database} (DATABASE_PATH) to back up"
    )
    database.parent.mkdir(parents=True, exist_ok=True)
    sqlite3.connect(database).close()
    assert main(["backup", str(database)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == ["error: the backup must go to another file than the database itself"]


def test_a_failed_backup_leaves_no_partial_copy(
    database: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database.parent.mkdir(parents=True, exist_ok=True)
    sqlite3.connect(database).close()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the backup folder should be")
    assert main(["backup", str(blocker / "copy.sqlite3")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith(f"error: the backup to {blocker / 'copy.sqlite3'} failed:")
    assert blocker.read_text() == "a file where the backup folder should be"
