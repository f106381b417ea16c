"""Put a backup in place of the database: checked first, the replaced file kept, nothing replayed over it.

SQLite replays a `-wal` file left beside a database (after an unclean stop) into whatever file bears the
database's name next time it is opened. A backup copied over the old file by hand would silently get the
old file's last writes back. Here the old file and its `-wal` move aside together, as a pair that still
opens as the old database, and the backup comes in alone.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from bot.store.sqlite.database import migration_files
from bot.store.sqlite.file_access import SIDE_FILE_SUFFIXES, storage_problem
from bot.store.sqlite.use_lock import DatabaseBusy, UseLock

# Tables every version of the bot's schema has: a file without them is not a backup of this bot.
_OUR_TABLES = frozenset({"meta", "usage", "jobs"})


class RestoreRefused(Exception):
    """The restore was not done, and nothing was changed; the text is one line for the admin."""


@dataclass(frozen=True, slots=True)
class Restored:
    database: Path
    schema_version: int
    kept: Path | None  # where the replaced database now is (None when there was none)
    owner_kept: bool  # whether the new file got the replaced file's owner (needs root or the same owner)


def utc_stamp(now: float | None = None) -> str:
    """Return YYYYMMDD-HHMMSS in UTC, the stamp in backup and kept-file names."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))


def check_backup(backup: Path) -> int:
    """Return the backup's schema version, or raise RestoreRefused saying why it cannot be restored."""
    if not backup.is_file():
        raise RestoreRefused(f"there is no backup file at {backup}")
    try:
        conn = sqlite3.connect(f"{backup.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise RestoreRefused(f"{backup} cannot be opened ({exc}); nothing was changed") from None
    try:
        verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if verdict != "ok":
            raise RestoreRefused(f"{backup} is damaged (integrity check: {verdict}); nothing was changed")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise RestoreRefused(
            f"{backup} is not an SQLite database or is damaged ({exc}); nothing was changed"
        ) from None
    finally:
        conn.close()
    known = len(migration_files())
    if version > known:
        raise RestoreRefused(
            f"{backup} is at schema version {version}, newer than this bot ({known}): "
            "upgrade the bot first; nothing was changed"
        )
    if not tables >= _OUR_TABLES:
        raise RestoreRefused(
            f"{backup} is not a backup of this bot (it lacks its tables); nothing was changed"
        )
    return version


def restore(backup: Path, database: Path, *, now: float | None = None) -> Restored:
    """Replace `database` with `backup`; refuse (changing nothing) while anything uses the database."""
    if backup.resolve() == database.resolve():
        raise RestoreRefused("the backup and DATABASE_PATH are the same file")
    problem = storage_problem(database)
    if problem is not None:
        raise RestoreRefused(problem)
    try:
        lock = UseLock.exclusive(database)
    except DatabaseBusy as exc:
        raise RestoreRefused(f"{exc}; nothing was changed") from None
    try:
        version = check_backup(backup)
        staging = database.with_name(database.name + ".restoring")
        _copy_consistently(backup, staging)
        kept = _move_aside(database, utc_stamp(now)) if database.exists() else None
        os.replace(staging, database)
        owner_kept = _take_owner_and_mode(database, kept) if kept is not None else True
    finally:
        lock.release()
    return Restored(database=database, schema_version=version, kept=kept, owner_kept=owner_kept)


def _copy_consistently(source: Path, target: Path) -> None:
    """Copy an SQLite file through SQLite's backup API into one self-contained file (no -wal beside it)."""
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    try:
        dest = sqlite3.connect(target)
        try:
            src.backup(dest)
            dest.execute("PRAGMA journal_mode=DELETE")
        finally:
            dest.close()
    finally:
        src.close()


def _move_aside(database: Path, stamp: str) -> Path:
    """Keep the database and its -wal as `<name>.before-restore-STAMP`; return that name."""
    kept = database.with_name(f"{database.name}.before-restore-{stamp}")
    # Merge the -wal into the file first where it can be (a healthy database); if it cannot, the -wal
    # moves with the file under the matching name, so the kept copy still opens with its last writes.
    with contextlib.suppress(sqlite3.Error):
        conn = sqlite3.connect(database)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    try:
        # A second name for the old file: the database keeps its name until the backup replaces it in
        # one atomic rename, so no moment exists where the bot would start on a missing file.
        os.link(database, kept)
    except OSError:  # a filesystem without hard links
        os.replace(database, kept)
    wal = database.with_name(database.name + SIDE_FILE_SUFFIXES[0])
    if wal.exists():
        os.replace(wal, kept.with_name(kept.name + SIDE_FILE_SUFFIXES[0]))
    # The -shm is only an index of the -wal, rebuilt on open: it must not outlive the file it served.
    with contextlib.suppress(FileNotFoundError):
        database.with_name(database.name + SIDE_FILE_SUFFIXES[1]).unlink()
    return kept


def _take_owner_and_mode(database: Path, previous: Path) -> bool:
    """Give the restored file the owner and mode of the one it replaced; False if the owner could not be."""
    info = previous.stat()
    os.chmod(database, info.st_mode & 0o7777)
    try:
        os.chown(database, info.st_uid, info.st_gid)
    except PermissionError:
        return (database.stat().st_uid, database.stat().st_gid) == (info.st_uid, info.st_gid)
    return True
