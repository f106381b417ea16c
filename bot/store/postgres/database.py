"""The asyncpg pool, the numbered migrations (applied under an advisory lock), and the database's faults in one line.

Several bot processes share one database. Whatever must happen once among them takes a PostgreSQL advisory
lock whose key is made from the schema and a name (`lock_key`), so that two deployments in two schemas of
one database never wait on each other:

- migrations: every process runs `migrate` at start inside one transaction holding
  `pg_advisory_xact_lock(key('migrations'))`; the second process to start waits, then finds the version
  applied and does nothing;
- `exclusive(name)`: a session lock taken without waiting (`pg_try_advisory_lock`), for work one process
  does while the others skip it (the command sync);
- the quota ledger's row-level rules live in the ledger (see `PgQuotaLedger.reserve`).

DATABASE_URL holds a password: every line here names DATABASE_URL and shows the URL with it replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg

from bot.domain.errors import StorageFull, StoreUnavailable
from bot.store.migration_files import packaged_migrations
from bot.store.postgres.url import redact

log = logging.getLogger(__name__)

# How long opening a connection may take before the server counts as unreachable: a firewall that drops
# packets must not hang a start, a check or a copy.
CONNECT_TIMEOUT = 10.0
# A statement that takes longer than this is a database in trouble, not a busy one.
COMMAND_TIMEOUT = 60.0
POOL_MAX_SIZE = 10
_FULL_LOG_INTERVAL = 60.0
# The unix time on the database server's clock: leases are measured on one clock, whatever the
# processes' clocks say.
DB_NOW = "extract(epoch from clock_timestamp())::double precision"

# Faults of reaching the server, not of what was asked: worth retrying later.
CONNECTION_FAULTS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.InterfaceError,
)


class DatabaseUnreachable(Exception):
    """The server did not answer (refused, timed out, starting up); the text is one line, password hidden."""


class DatabaseUnusable(Exception):
    """The server answered but the database cannot be used as it is; one line, password hidden, with the fix."""


def migration_files() -> list[tuple[int, str, str]]:
    """Return (number, name, sql) of every packaged PostgreSQL migration, in order."""
    return packaged_migrations("bot.store.postgres")


def one_line(error: BaseException) -> str:
    """Return a driver error as one short line (it never holds the password: asyncpg does not echo it)."""
    if isinstance(error, OSError) and error.errno and error.errno > 0:
        return os.strerror(error.errno)  # "Connection refused", not asyncio's wording with the address
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if isinstance(error, TimeoutError):
        return "no answer in time (check the host and port, and any firewall between)"
    text = " ".join(str(error).split())
    return text or type(error).__name__


def row_count(status: str) -> int:
    """Return the row count of a command status such as 'UPDATE 3', 'DELETE 0' or 'INSERT 0 1'."""
    return int(status.rsplit(" ", 1)[-1]) if status and status[-1].isdigit() else 0


def explain_connect_error(shown: str, error: BaseException) -> DatabaseUnreachable | DatabaseUnusable:
    """Sort a failed connection into one to retry (unreachable) and one the admin must fix (unusable)."""
    if isinstance(error, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
        return DatabaseUnusable(
            f"DATABASE_URL {shown}: PostgreSQL refused the user or password ({one_line(error)}); "
            "check the user and password in DATABASE_URL"
        )
    if isinstance(error, asyncpg.InvalidCatalogNameError):
        return DatabaseUnusable(
            f"DATABASE_URL {shown}: {one_line(error)}; create it first (createdb, or CREATE DATABASE)"
        )
    if isinstance(error, CONNECTION_FAULTS):
        return DatabaseUnreachable(f"DATABASE_URL {shown} cannot be reached: {one_line(error)}")
    return DatabaseUnusable(f"DATABASE_URL {shown} cannot be used: {one_line(error)}")


class PgDatabase:
    """A pool of connections to one database (one schema of it), shared by the PostgreSQL stores."""

    def __init__(self, pool: asyncpg.Pool, url: str, schema: str) -> None:
        self._pool = pool
        self._url = url
        self.shown = redact(url)  # the URL as it may appear in a line
        self.schema = schema
        self._full_logged_at = float("-inf")
        self._listeners: list[asyncpg.Connection] = []

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        migrate: bool = True,
        connect_timeout: float = CONNECT_TIMEOUT,
        max_size: int = POOL_MAX_SIZE,
    ) -> PgDatabase:
        """Connect a pool and (by default) migrate; raise DatabaseUnreachable or DatabaseUnusable, one line each."""
        shown = redact(url)
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=max_size,
                timeout=connect_timeout,
                command_timeout=COMMAND_TIMEOUT,
                server_settings={"application_name": "imageprompt-bot"},
            )
        except (DatabaseUnreachable, DatabaseUnusable):
            raise
        except Exception as exc:  # every failure to connect is sorted into the two one-line kinds
            raise explain_connect_error(shown, exc) from None
        try:
            db = cls(pool, url, await _current_schema(pool, shown))
            if migrate:
                await db.migrate()
            return db
        except BaseException as exc:
            await _close_pool(pool)
            if isinstance(exc, DatabaseUnreachable | DatabaseUnusable):
                raise
            if isinstance(exc, Exception):
                raise explain_connect_error(shown, exc) from None
            raise

    async def close(self) -> None:
        for conn in self._listeners:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
        self._listeners.clear()
        await _close_pool(self._pool)

    # --- migrations ------------------------------------------------------------------------------

    async def schema_version(self) -> int:
        exists = await self.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not exists:
            return 0
        return int(await self.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"))

    async def migrate(self) -> list[str]:
        """Apply the migrations this database has not seen yet, once whatever the number of processes."""
        applied: list[str] = []
        files = migration_files()
        async with self.transaction() as conn:
            # Every process starting at the same moment queues here; the first applies, the others find
            # the version current. The lock ends with the transaction, even if the process dies.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", await self._lock_key(conn, "migrations"))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
            )
            current = int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"))
            if current > len(files):
                raise DatabaseUnusable(
                    f"DATABASE_URL {self.shown} is at schema version {current}, newer than this bot "
                    f"({len(files)}): upgrade the bot"
                )
            for number, name, sql in files[current:]:
                await conn.execute(sql)  # the simple protocol: a file of several statements in one go
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    number,
                    name,
                    time.time(),
                )
                applied.append(name)
        if applied:
            log.info("database migrated: %s", ", ".join(applied))
        return applied

    # --- statements --------------------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """Run the block as one transaction on one pooled connection (READ COMMITTED)."""
        async with self._faults(), self._pool.acquire() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """Lend one pooled connection (each statement its own transaction)."""
        async with self._faults(), self._pool.acquire() as conn:
            yield conn

    async def execute(self, sql: str, *args: Any) -> str:
        async with self._faults():
            return cast("str", await self._pool.execute(sql, *args))

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self._faults():
            return cast("list[asyncpg.Record]", await self._pool.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self._faults():
            return cast("asyncpg.Record | None", await self._pool.fetchrow(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._faults():
            return await self._pool.fetchval(sql, *args)

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        async with self._faults():
            await self._pool.executemany(sql, args)

    @asynccontextmanager
    async def _faults(self) -> AsyncIterator[None]:
        """Turn a full disk into StorageFull (one ERROR line a minute) and a lost server into StoreUnavailable."""
        try:
            yield
        except (
            asyncpg.InsufficientResourcesError
        ) as exc:  # 53xxx: disk full, out of memory, too many connections
            now = time.monotonic()
            if now - self._full_logged_at >= _FULL_LOG_INTERVAL:
                self._full_logged_at = now
                log.error(  # noqa: TRY400 (one line for the admin: the cause is known, no traceback)
                    "the database at DATABASE_URL %s cannot be written (%s): free some space on the "
                    "PostgreSQL server; until then new tasks fail and are refunded",
                    self.shown,
                    one_line(exc),
                )
            raise StorageFull(one_line(exc)) from None
        except CONNECTION_FAULTS as exc:
            raise StoreUnavailable(f"DATABASE_URL {self.shown}: {one_line(exc)}") from None

    # --- meta, health, locks ---------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        value = await self.fetchval("SELECT value FROM meta WHERE key = $1", key)
        return None if value is None else str(value)

    async def set_meta(self, key: str, value: str) -> None:
        await self.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            key,
            value,
        )

    async def is_reachable(self, timeout: float = 5.0) -> bool:
        """Return whether the pool can lend a connection that answers (for health checks); never raises."""
        try:
            async with asyncio.timeout(timeout):
                await self._pool.fetchval("SELECT 1")
        except Exception as exc:  # any failure means "not healthy"; one line says why
            log.warning("database health check failed: DATABASE_URL %s: %s", self.shown, one_line(exc))
            return False
        return True

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """Hold the named session lock if no other process does: yield True with it held, False without waiting."""
        async with self.connection() as conn:
            key = await self._lock_key(conn, name)
            held = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))
            try:
                yield held
            finally:
                if held:
                    with contextlib.suppress(*CONNECTION_FAULTS):
                        await conn.fetchval("SELECT pg_advisory_unlock($1)", key)

    async def _lock_key(self, conn: asyncpg.Connection, name: str) -> int:
        return int(await conn.fetchval("SELECT hashtextextended(current_schema() || ':' || $1, 0)", name))

    def channel(self, name: str) -> str:
        """Return a LISTEN/NOTIFY channel of this schema (channels are shared by the whole database)."""
        return f"bot_{name}_{abs(hash_text(self.schema)) % 10**8}"

    async def listen(
        self, channel: str, on_notify: Callable[[str], None], on_lost: Callable[[], None]
    ) -> asyncpg.Connection:
        """Call `on_notify(payload)` for each notification on the channel, on a connection of its own.

        `on_lost()` is called if that connection ends; the caller listens again. Raises StoreUnavailable.
        """
        try:
            conn = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT)
        except CONNECTION_FAULTS as exc:
            raise StoreUnavailable(f"DATABASE_URL {self.shown}: {one_line(exc)}") from None
        self._listeners.append(conn)

        def deliver(_conn: object, _pid: int, _channel: str, payload: object) -> None:
            on_notify(str(payload))

        def lost(_conn: object) -> None:
            if conn in self._listeners:
                self._listeners.remove(conn)
            on_lost()

        conn.add_termination_listener(lost)
        try:
            await conn.add_listener(channel, deliver)
        except BaseException:
            self._listeners.remove(conn)
            conn.terminate()
            raise
        return conn


def hash_text(text: str) -> int:
    """A stable hash of a string (Python's own hash() changes from process to process)."""
    value = 0
    for byte in text.encode():
        value = (value * 131 + byte) % (2**61 - 1)
    return value


async def _current_schema(pool: asyncpg.Pool, shown: str) -> str:
    schema = await pool.fetchval("SELECT current_schema()")
    if schema is None:
        raise DatabaseUnusable(
            f"DATABASE_URL {shown}: its search_path names no schema that exists; create the schema "
            "or remove search_path from the URL"
        )
    return str(schema)


async def _close_pool(pool: asyncpg.Pool) -> None:
    # Short: a server that went away must not hold a stopping bot past its 10 s.
    try:
        await asyncio.wait_for(pool.close(), timeout=2)
    except CONNECTION_FAULTS:
        pool.terminate()
