"""The aiosqlite connection (WAL, busy timeout) and the numbered migrations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from bot.domain.errors import StorageFull
from bot.store.migration_files import packaged_migrations
from bot.store.sqlite.file_access import storage_problem
from bot.store.sqlite.use_lock import DatabaseBusy, UseLock

log = logging.getLogger(__name__)

# SQLite's result codes for a write that found no room (SQLITE_FULL) and a failed disk write (SQLITE_IOERR).
_SQLITE_FULL = 13
_SQLITE_IOERR = 10
# The disk-full line is for the admin, once in a while, not once per failed statement.
_FULL_LOG_INTERVAL = 60.0


class DatabaseUnusable(Exception):
    """The database cannot be used as it is; the text is one line naming the file, the fault and the fix."""


def explain_sqlite_error(path: Path, exc: sqlite3.Error) -> str:
    """Turn SQLite's words for an unusable file into one line an admin can act on."""
    message = str(exc)
    if "file is not a database" in message:
        return (
            f"DATABASE_PATH {path} is not an SQLite database, or its first page is damaged: point DATABASE_PATH "
            "at the bot's database, or put a backup in its place with `python -m bot restore BACKUP`"
        )
    if "malformed" in message:
        return f"DATABASE_PATH {path} is damaged ({message}): put a backup in its place with `python -m bot restore BACKUP`"
    if "readonly" in message or "read-only" in message:
        return f"DATABASE_PATH {path} is read-only ({message}): make the file and its folder writable for the bot"
    if "locked" in message:
        return f"DATABASE_PATH {path} is locked by another program ({message}): close it and start again"
    if getattr(exc, "sqlite_errorcode", None) in (_SQLITE_FULL, _SQLITE_IOERR):
        return f"DATABASE_PATH {path} cannot be written: {message}; free some disk space and start again"
    return f"DATABASE_PATH {path} cannot be opened: {message}"


def newer_than_bot(path: Path, version: int, known: int) -> str:
    return (
        f"DATABASE_PATH {path} is at schema version {version}, newer than this bot ({known}): "
        "upgrade the bot, or restore a backup made by this version"
    )


def migration_files() -> list[tuple[int, str, str]]:
    """Return (number, name, sql) of every packaged migration, in order."""
    return packaged_migrations("bot.store.sqlite")


class Database:
    """One SQLite file shared by the stores; every multi-step write is one transaction."""

    def __init__(self, connection: aiosqlite.Connection, path: Path, use_lock: UseLock | None = None) -> None:
        self._conn = connection
        self.path = path
        self._use_lock = use_lock
        # aiosqlite runs one connection on one thread, but coroutines interleave between awaits: the
        # lock keeps a transaction's statements together so that no other coroutine's land inside it.
        self._lock = asyncio.Lock()
        self._full_logged_at = float("-inf")

    @classmethod
    async def open(cls, path: Path | str) -> Database:
        """Open (creating its folder) and migrate the database at `path`.

        Raises DatabaseUnusable, with one line for the admin, for every fault of the file or its folder;
        a file that is not SQLite, is damaged or is newer than the bot is left exactly as it was.
        """
        path = Path(path)
        if str(path) == ":memory:":
            return await cls._connect(path, None)
        problem = await asyncio.to_thread(storage_problem, path)
        if problem is not None:
            raise DatabaseUnusable(problem)
        try:
            use_lock = await asyncio.to_thread(UseLock.shared, path)
        except DatabaseBusy as exc:
            raise DatabaseUnusable(f"DATABASE_PATH {exc}") from None
        except OSError as exc:
            raise DatabaseUnusable(
                f"DATABASE_PATH {path}: its lock file cannot be made ({exc.strerror})"
            ) from None
        try:
            return await cls._connect(path, use_lock)
        except BaseException:
            use_lock.release()
            raise

    @classmethod
    async def _connect(cls, path: Path, use_lock: UseLock | None) -> Database:
        try:
            conn = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise DatabaseUnusable(explain_sqlite_error(path, exc)) from None
        try:
            conn.row_factory = aiosqlite.Row
            # Read before anything is written: a file that is not ours, is damaged or is newer than the
            # bot fails here, before WAL mode or a migration could change a byte of it.
            await _refuse_unknown_files(conn, path)
            # WAL lets a backup or a second reader work beside the bot; the busy timeout makes a second
            # process wait for the write lock instead of failing at once.
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA busy_timeout=5000")
            await conn.execute("PRAGMA foreign_keys=ON")
            await conn.execute("PRAGMA synchronous=NORMAL")
            db = cls(conn, path, use_lock)
            await db.migrate()
            return db
        except BaseException as exc:
            # The connection's thread keeps the process alive until it is closed: close it on every failure.
            await conn.close()
            if isinstance(exc, sqlite3.Error):
                raise DatabaseUnusable(explain_sqlite_error(path, exc)) from None
            raise

    async def close(self) -> None:
        try:
            await self._conn.close()
        finally:
            if self._use_lock is not None:
                self._use_lock.release()

    async def schema_version(self) -> int:
        row = await self.fetchone("PRAGMA user_version")
        return int(row[0]) if row else 0

    async def migrate(self) -> list[str]:
        """Apply the migrations this file has not seen yet; return their names."""
        applied = []
        async with self.transaction() as conn:
            cursor = await conn.execute("PRAGMA user_version")
            row = await cursor.fetchone()
            current = int(row[0]) if row else 0
            files = migration_files()
            if current > len(files):
                raise DatabaseUnusable(newer_than_bot(self.path, current, len(files)))
            for number, name, sql in files[current:]:
                for statement in _split_sql(sql):
                    await conn.execute(statement)
                await conn.execute(f"PRAGMA user_version = {number}")
                applied.append(name)
        if applied:
            log.info("database migrated: %s", ", ".join(applied))
        return applied

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Run the block as one write transaction (BEGIN IMMEDIATE takes the write lock up front)."""
        async with self._lock, self._storage_faults():
            try:
                # BEGIN sits inside the try: a task cancelled while awaiting it (a shutdown) has still
                # begun the transaction on SQLite's thread, and must not leave it holding the write lock.
                await self._conn.execute("BEGIN IMMEDIATE")
                yield self._conn
            except BaseException:
                await self._rollback()
                raise
            else:
                await self._conn.execute("COMMIT")

    @asynccontextmanager
    async def _storage_faults(self) -> AsyncIterator[None]:
        """Turn a write that found no room on the disk into StorageFull, with one ERROR line a minute."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) not in (_SQLITE_FULL, _SQLITE_IOERR):
                raise
            now = time.monotonic()
            if now - self._full_logged_at >= _FULL_LOG_INTERVAL:
                self._full_logged_at = now
                log.error(  # noqa: TRY400 (one line for the admin: the cause is known, no traceback)
                    "the database %s cannot be written (%s): free some disk space; until then new tasks "
                    "fail and are refunded",
                    self.path,
                    exc,
                )
            raise StorageFull(str(exc)) from None

    async def _rollback(self) -> None:
        # When BEGIN itself failed (busy) there is no transaction to roll back.
        with contextlib.suppress(sqlite3.OperationalError):
            await self._conn.execute("ROLLBACK")

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run one write statement in its own transaction; return the last row id."""
        async with self._lock, self._storage_faults():
            cursor = await self._conn.execute(sql, tuple(params))
            return cursor.lastrowid or 0

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        # One trip to SQLite's thread instead of two (execute, then fetch): reads are on the hot path.
        async with self._lock:
            return list(await self._conn.execute_fetchall(sql, tuple(params)))

    async def update(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run one write statement (atomic on its own) and return how many rows it changed."""
        async with self._lock, self._storage_faults():
            cursor = await self._conn.execute(sql, tuple(params))
            return cursor.rowcount

    async def get_meta(self, key: str) -> str | None:
        row = await self.fetchone("SELECT value FROM meta WHERE key = ?", (key,))
        return str(row["value"]) if row else None

    async def set_meta(self, key: str, value: str) -> None:
        await self.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """Yield True: one process uses an SQLite file, so work meant for one process is always this one's."""
        yield True

    async def is_reachable(self) -> bool:
        """Return whether a trivial query answers (for health checks)."""
        try:
            await self.fetchone("SELECT 1")
        except Exception:  # any failure means "not healthy"; the caller only reports it
            log.exception("database health check failed")
            return False
        return True

    async def backup_to(self, target: Path) -> None:
        """Write a consistent copy of the database while it is in use (SQLite's backup API)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        async with aiosqlite.connect(target) as dest:
            async with self._lock:
                await self._conn.backup(dest)
            # The copy is one self-contained file (no -wal beside it), openable from read-only media.
            await dest.execute("PRAGMA journal_mode=DELETE")


async def _refuse_unknown_files(conn: aiosqlite.Connection, path: Path) -> None:
    """Raise unless the file is an SQLite database (or empty) this bot knows how to use; write nothing."""
    cursor = await conn.execute("PRAGMA user_version")
    row = await cursor.fetchone()
    version = int(row[0]) if row else 0
    known = len(migration_files())
    if version > known:
        raise DatabaseUnusable(newer_than_bot(path, version, known))
    # Reading the schema reads the first pages: a damaged header or schema fails here, not mid-task.
    await conn.execute_fetchall("SELECT count(*) FROM sqlite_master")


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit our transaction).

    SQLite's own tokenizer says where a statement ends, so a `;` or `--` inside a string literal is
    taken as the text it is. Comment-only lines are dropped.
    """
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        if not pending and line.lstrip().startswith("--"):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip() and not all(
        line.lstrip().startswith("--") or not line.strip() for line in pending.splitlines()
    ):
        raise ValueError(f"a migration ends inside a statement: {pending.strip()[:80]!r}")
    return statements
