"""`python -m bot copy-to-postgres URL`: every table of the bot's SQLite file into an empty PostgreSQL database.

The SQLite file is first brought to this bot's schema (as a start would), then read while no bot can use
it (the exclusive use lock a restore takes). The PostgreSQL side is migrated, checked to hold nothing of a
bot yet, and filled in one transaction that also holds its tables locked: either every row arrives and the
counts match, or nothing is left behind. Columns are matched by name: the PostgreSQL schema is SQLite's,
converted (migrations 0001 and 0003-0006), plus what only several processes need (leases, the webhook
inbox, cancel requests). The meta table comes too, the key of forgotten members' stand-in ids with it, so
today's rows of a member who was forgotten still count as theirs.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bot.store.postgres.database import DatabaseUnreachable, DatabaseUnusable, PgDatabase
from bot.store.sqlite.database import Database
from bot.store.sqlite.database import DatabaseUnusable as SqliteUnusable
from bot.store.sqlite.use_lock import DatabaseBusy, UseLock

# Parents before children (jobs point at usage rows, images at jobs); tables added later come after.
_ORDER = (
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
# What a check may have written into an otherwise empty bot database.
_HARMLESS_META = frozenset({"last_check"})
_BATCH = 500


class CopyRefused(Exception):
    """The copy was not made (nothing was written to PostgreSQL); the text is one line for the admin."""


@dataclass(frozen=True, slots=True)
class Copied:
    source: Path
    target: str  # the URL, password hidden
    counts: dict[str, int]  # rows per table, equal on both sides

    @property
    def total(self) -> int:
        return sum(self.counts.values())


async def copy_sqlite_to_postgres(source: Path, url: str) -> Copied:
    """Copy every table of the SQLite database at `source` into the empty PostgreSQL database at `url`."""
    try:
        await (await Database.open(source)).close()  # migrated to this bot's schema, as a start does
    except SqliteUnusable as exc:
        raise CopyRefused(str(exc)) from None
    try:
        use_lock = await asyncio.to_thread(UseLock.exclusive, source)
    except DatabaseBusy:
        raise CopyRefused(
            f"DATABASE_PATH {source} is in use by a running bot (or a check or backup): stop the bot "
            "first, then copy"
        ) from None
    try:
        try:
            target = await PgDatabase.open(url, migrate=False)
        except (DatabaseUnreachable, DatabaseUnusable) as exc:
            raise CopyRefused(str(exc)) from None
        try:
            await _refuse_others_tables(target)
            try:
                await target.migrate()
            except DatabaseUnusable as exc:
                raise CopyRefused(str(exc)) from None
            return await _copy(source, target)
        finally:
            await target.close()
    finally:
        use_lock.release()


async def _refuse_others_tables(target: PgDatabase) -> None:
    """Refuse a database that holds tables of something else (before this bot's tables are made in it)."""
    rows = await target.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    names = sorted(str(row["tablename"]) for row in rows)
    if names and "schema_migrations" not in names:
        raise CopyRefused(
            f"DATABASE_URL {target.shown} is not empty (it has tables of something else: "
            f"{', '.join(names[:3])}{', ...' if len(names) > 3 else ''}): copy into a new, empty database "
            "(createdb); nothing was copied"
        )


async def _copy(source: Path, target: PgDatabase) -> Copied:
    reader = await asyncio.to_thread(_SqliteReader, source)
    try:
        tables = _ordered(reader.tables())
        counts = {table: await asyncio.to_thread(reader.count, table) for table in tables}
        async with target.transaction() as conn:
            types = await _column_types(conn)
            for table in tables:
                missing = [column for column in reader.columns(table) if column not in types.get(table, {})]
                if missing:
                    where = f"{table}.{missing[0]}" if table in types else table
                    raise CopyRefused(
                        f"the PostgreSQL schema of this bot has no {where}, which {source} has: "
                        "upgrade the bot, then copy; nothing was copied"
                    )
            await conn.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
            await _refuse_unless_empty(conn, tables, target.shown)
            await conn.execute("DELETE FROM meta")  # at most what a check wrote; the source's come next
            for table in tables:
                await _copy_table(conn, reader, table, types[table], target.schema)
            await _move_identities_past_copied_ids(conn, [table for table in tables if "id" in types[table]])
            for table in tables:
                copied = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))  # noqa: S608 (our tables)
                if copied != counts[table]:
                    raise CopyRefused(
                        f"{table}: {counts[table]} rows in {source} but {copied} in PostgreSQL; "
                        "nothing was copied"
                    )
    finally:
        await asyncio.to_thread(reader.close)
    return Copied(source, target.shown, counts)


def _ordered(tables: list[str]) -> list[str]:
    known = [table for table in _ORDER if table in tables]
    return known + sorted(table for table in tables if table not in _ORDER)


async def _column_types(conn: asyncpg.Connection) -> dict[str, dict[str, str]]:
    rows = await conn.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema()"
    )
    types: dict[str, dict[str, str]] = {}
    for row in rows:
        types.setdefault(str(row["table_name"]), {})[str(row["column_name"])] = str(row["data_type"])
    return types


async def _refuse_unless_empty(conn: asyncpg.Connection, tables: list[str], shown: str) -> None:
    # The tables with the bot's data are named first; meta (settings of the bot itself) last.
    for table in sorted(tables, key=lambda name: name == "meta"):
        if table == "meta":
            keys = {str(row["key"]) for row in await conn.fetch("SELECT key FROM meta")}
            held = sorted(keys - _HARMLESS_META)
        else:
            held = ["rows"] if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})") else []  # noqa: S608
        if held:
            raise CopyRefused(
                f"DATABASE_URL {shown} is not empty ({table} has rows): copy into a new, empty database "
                "(createdb), so that nothing is mixed or overwritten; nothing was copied"
            )


async def _copy_table(
    conn: asyncpg.Connection, reader: _SqliteReader, table: str, types: dict[str, str], schema: str
) -> None:
    columns = reader.columns(table)
    convert = [_converter(types[column]) for column in columns]
    batches = reader.rows(table, columns)
    while True:
        batch = await asyncio.to_thread(next, batches, None)
        if batch is None:
            return
        records = [tuple(c(value) for c, value in zip(convert, row, strict=True)) for row in batch]
        await conn.copy_records_to_table(table, records=records, columns=columns, schema_name=schema)


def _converter(data_type: str) -> Any:
    def as_int(value: object) -> object:
        return None if value is None else int(value)  # type: ignore[call-overload]

    def as_float(value: object) -> object:
        return None if value is None else float(value)  # type: ignore[arg-type]

    def as_bytes(value: object) -> object:
        return None if value is None else bytes(value)  # type: ignore[call-overload]

    def as_text(value: object) -> object:
        return None if value is None else str(value)

    if data_type in ("bigint", "integer", "smallint"):
        return as_int
    if data_type in ("double precision", "real", "numeric"):
        return as_float
    if data_type == "bytea":
        return as_bytes
    return as_text


async def _move_identities_past_copied_ids(conn: asyncpg.Connection, tables: list[str]) -> None:
    """Make the next id of usage, grants and audit follow the highest copied one."""
    for table in tables:
        sequence = await conn.fetchval("SELECT pg_get_serial_sequence($1, 'id')", table)
        if sequence is None:
            continue
        highest = await conn.fetchval(f"SELECT max(id) FROM {table}")  # noqa: S608 (our tables)
        if highest is None:
            await conn.execute("SELECT setval($1, 1, false)", sequence)
        else:
            await conn.execute("SELECT setval($1, $2)", sequence, int(highest))


class _SqliteReader:
    """The source file, read-only, on one thread at a time."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)

    def tables(self) -> list[str]:
        rows = self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
        return [str(row[0]) for row in rows]

    def columns(self, table: str) -> list[str]:
        return [str(row[1]) for row in self._conn.execute(f"PRAGMA table_info({table})")]

    def count(self, table: str) -> int:
        return int(self._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608

    def rows(self, table: str, columns: list[str]) -> Iterator[list[tuple[Any, ...]]]:
        cursor = self._conn.execute(f"SELECT {', '.join(columns)} FROM {table}")  # noqa: S608 (its own names)
        while batch := cursor.fetchmany(_BATCH):
            yield batch

    def close(self) -> None:
        self._conn.close()
