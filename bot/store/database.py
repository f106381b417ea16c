"""The aiosqlite connection (WAL, busy timeout) and the numbered migrations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

log = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migration_files() -> list[tuple[int, str, str]]:
    """Return (number, name, sql) of every packaged migration, in order."""
    folder = resources.files("bot.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [number for number, _, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"migrations must be numbered 0001 upwards without gaps, found {numbers}")
    return found


class Database:
    """One SQLite file shared by the stores; every multi-step write is one transaction."""

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self._conn = connection
        self.path = path
        # aiosqlite runs one connection on one thread, but coroutines interleave between awaits: the
        # lock keeps a transaction's statements together so that no other coroutine's land inside it.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path | str) -> Database:
        """Open (creating its folder) and migrate the database at `path`."""
        path = Path(path)
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        # WAL lets a backup or a second reader work beside the bot; the busy timeout makes a second
        # process wait for the write lock instead of failing at once.
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA busy_timeout=5000")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA synchronous=NORMAL")
        db = cls(conn, path)
        await db.migrate()
        return db

    async def close(self) -> None:
        await self._conn.close()

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
                raise RuntimeError(
                    f"the database is at schema version {current}, newer than this bot ({len(files)}): "
                    "upgrade the bot"
                )
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
        async with self._lock:
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

    async def _rollback(self) -> None:
        # When BEGIN itself failed (busy) there is no transaction to roll back.
        with contextlib.suppress(sqlite3.OperationalError):
            await self._conn.execute("ROLLBACK")

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run one write statement in its own transaction; return the last row id."""
        async with self._lock:
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
        async with self._lock:
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


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit our transaction)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [statement.strip() for statement in "\n".join(lines).split(";") if statement.strip()]
